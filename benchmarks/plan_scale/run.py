"""Plan a large fleet: `migrate plan --json`, cold and warm, against Alembic loading the same trees.

    python -m benchmarks.plan_scale.run [--services 50] [--revisions 200] [--repeat 3]
                                        [--work DIR] [--profile cold|warm]

Generates the workspace (``generate.py``), then measures, each as a fresh process and the
median of ``--repeat`` runs:

* floor: a Python process that only loads the services' script directories with Alembic's
  own ``ScriptDirectory`` and walks their revisions (what any Alembic-based tool must pay);
* cold: ``migrate plan --json`` with no revision cache (``.migrate/cache`` deleted first);
* warm: ``migrate plan --json`` with the cache the previous cold run left.

Prints cold/floor and warm/floor (goals: <= 1.25 and <= 0.3) and the peak RSS of each run
(``ru_maxrss`` of the process and the worker processes it waited for, from ``wait4``).
Each plan's output is checked: exit code 0 and one step per revision.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.plan_scale.generate import generate

GOALS = {"cold": 1.25, "warm": 0.3}

FLOOR = """
import sys
from alembic.script import ScriptDirectory

count = 0
for location in sys.argv[1:]:
    count += len(list(ScriptDirectory(location).walk_revisions()))
print(count)
"""


@dataclass
class Measure:
    name: str
    seconds: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def peak_mb(self) -> float:
        return max(self.rss_kb) / 1024


def migrate_command() -> list[str]:
    script = Path(sys.executable).with_name("migrate")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from orchestrator.cli.app import main; main()"]


def run_once(argv: list[str], cwd: Path, stdout_path: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in KiB, exit code) of one fresh process."""
    with open(stdout_path, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace"))
        raise SystemExit(f"{' '.join(argv)} exited with {proc.returncode}")
    return elapsed, usage.ru_maxrss, proc.returncode


def check_plan(path: Path, expected_steps: int) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    steps = len(data["steps"])
    if steps != expected_steps:
        raise SystemExit(f"the plan has {steps} steps, expected {expected_steps}")


def check_floor(path: Path, expected: int) -> None:
    found = int(path.read_text().strip())
    if found != expected:
        raise SystemExit(f"Alembic walked {found} revisions, expected {expected}")


def profile(kind: str, root: Path, out_dir: Path, top: int = 25) -> None:
    """Run one cold or warm plan under cProfile (the main process) and print where time goes."""
    import pstats

    if kind == "cold":
        shutil.rmtree(root / ".migrate" / "cache", ignore_errors=True)
    prof = out_dir / f"{kind}.prof"
    entry = out_dir / "migrate_entry.py"
    entry.write_text("from orchestrator.cli.app import main\n\nmain()\n", encoding="utf-8")
    with open(out_dir / f"{kind}-profiled.json", "wb") as out:
        argv = [sys.executable, "-m", "cProfile", "-o", str(prof), str(entry), "plan", "--json"]
        subprocess.run(argv, cwd=root, stdout=out, check=True)
    print(f"\n--- cProfile of a {kind} `migrate plan --json` (main process), by cumulative time ---")
    stats = pstats.Stats(str(prof))
    stats.sort_stats("cumulative").print_stats(top)
    print("--- by own time ---")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    parser.add_argument("--work", type=Path, help="generate here and keep it (default: a temp folder, removed)")
    parser.add_argument("--profile", choices=["cold", "warm"], action="append", default=[])
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="plan_scale-"))
    try:
        root = work / "fleet"
        if root.exists():
            shutil.rmtree(root)
        started = time.perf_counter()
        generate(root, services=args.services, revisions=args.revisions, seed=args.seed)
        total = args.services * args.revisions
        print(
            f"plan_scale: {args.services} services x {args.revisions} revisions = {total:,} revision files "
            f"(generated in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs; "
            f"Python {sys.version.split()[0]})"
        )
        locations = sorted(str(p) for p in (root / "services").iterdir())
        floor_cmd = [sys.executable, "-c", FLOOR, *locations]
        plan_cmd = [*migrate_command(), "plan", "--json"]
        out = work / "stdout.json"
        cache = root / ".migrate" / "cache"

        # one untimed round: the page cache and Python's own bytecode caches are warm for all
        run_once(floor_cmd, root, out)
        shutil.rmtree(cache, ignore_errors=True)
        run_once(plan_cmd, root, out)

        measures = {name: Measure(name) for name in ("floor", "cold", "warm")}
        for _ in range(args.repeat):
            seconds, rss, _ = run_once(floor_cmd, root, out)
            check_floor(out, total)
            measures["floor"].seconds.append(seconds)
            measures["floor"].rss_kb.append(rss)

            shutil.rmtree(cache, ignore_errors=True)
            seconds, rss, _ = run_once(plan_cmd, root, out)
            check_plan(out, total)
            measures["cold"].seconds.append(seconds)
            measures["cold"].rss_kb.append(rss)
            if not any(cache.glob("*.json")):
                raise SystemExit("the cold run wrote no revision cache")

            seconds, rss, _ = run_once(plan_cmd, root, out)
            check_plan(out, total)
            measures["warm"].seconds.append(seconds)
            measures["warm"].rss_kb.append(rss)

        labels = {
            "floor": "floor: Alembic ScriptDirectory + walk_revisions",
            "cold": "cold:  migrate plan --json (no cache)",
            "warm": "warm:  migrate plan --json (cache)",
        }
        print(f"\n{'':50} {'median s':>9}  {'runs (s)':<22} {'peak RSS MiB':>12}")
        for name, m in measures.items():
            runs = " ".join(f"{s:.2f}" for s in m.seconds)
            print(f"{labels[name]:50} {m.median:9.2f}  {runs:<22} {m.peak_mb:12.1f}")
        floor = measures["floor"].median
        print()
        missed = []
        for name, goal in GOALS.items():
            ratio = measures[name].median / floor
            ok = ratio <= goal
            if not ok:
                missed.append(name)
            print(f"{name}/floor = {ratio:.2f}  (goal <= {goal:.2f}: {'met' if ok else 'MISSED'})")
        for kind in args.profile:
            profile(kind, root, work)
        if missed and not args.profile:
            print(f"\nto see where the time goes: --profile {' --profile '.join(missed)}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
