"""The CI gate on a large fleet: a cold `migrate check` against a cold `migrate plan --json`.

    python -m benchmarks.check_speed.run [--services 50] [--revisions 200] [--repeat 3] [--work DIR]
    python -m benchmarks.check_speed.run --services 5 --revisions 20        # smoke run

Generates the workspace with ``benchmarks/plan_scale/generate.py`` (50 x 200 = 10,000 revision
files by default), then runs each command as a fresh process with no revision cache
(``.migrate/cache`` deleted before every run), alternating the two, ``--repeat`` times.
Prints the median wall time of each, the ratio check/plan (goal: <= 2.0) and the peak RSS
(``ru_maxrss`` of the process and the worker processes it waited for, from ``wait4``).

Both pay for reading every tree through Alembic; `check` also reads every revision file's
source for its rules, `plan` also reads the environment's state and prints every step. Each
run's output is checked: the plan has one step per revision, the check reports no finding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.plan_scale.generate import generate
from benchmarks.plan_scale.run import Measure, migrate_command, run_once

GOAL = 2.0


def verify_plan(path: Path, expected_steps: int) -> None:
    steps = len(json.loads(path.read_text(encoding="utf-8"))["steps"])
    if steps != expected_steps:
        raise SystemExit(f"the plan has {steps} steps, expected {expected_steps}")


def verify_check(path: Path, expected_revisions: int) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["findings"]:
        raise SystemExit(f"the check found {len(data['findings'])} problem(s): {data['findings'][:3]}")
    checked = data["summary"]["revisions_checked"]
    if checked != expected_revisions:
        raise SystemExit(f"the check looked at {checked} revisions, expected {expected_revisions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--revisions", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the median is reported")
    parser.add_argument("--work", type=Path, help="generate here and keep it (default: a temp folder, removed)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="check_speed-"))
    try:
        root = work / "fleet"
        if root.exists():
            shutil.rmtree(root)
        started = time.perf_counter()
        generate(root, services=args.services, revisions=args.revisions, seed=args.seed)
        total = args.services * args.revisions
        print(
            f"check_speed: {args.services} services x {args.revisions} revisions = {total:,} revision files "
            f"(generated in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs; "
            f"Python {sys.version.split()[0]})"
        )
        migrate = migrate_command()
        check_cmd = [*migrate, "check", "--format", "json"]
        plan_cmd = [*migrate, "plan", "--json"]
        out = work / "stdout.json"
        cache = root / ".migrate" / "cache"

        # one untimed round of each: the page cache and Python's bytecode caches are warm for both
        for argv in (plan_cmd, check_cmd):
            shutil.rmtree(cache, ignore_errors=True)
            run_once(argv, root, out)

        check = Measure("cold `migrate check` (no cache)")
        plan = Measure("cold `migrate plan --json` (no cache)")
        for i in range(args.repeat):
            order = [(check, check_cmd), (plan, plan_cmd)]
            for measure, argv in order if i % 2 == 0 else reversed(order):
                shutil.rmtree(cache, ignore_errors=True)
                seconds, rss, _ = run_once(argv, root, out)
                if measure is check:
                    verify_check(out, total)
                else:
                    verify_plan(out, total)
                measure.seconds.append(seconds)
                measure.rss_kb.append(rss)

        print(f"\n{'':40} {'median s':>9}  {'runs (s)':<24} {'peak RSS MiB':>12}")
        for m in (check, plan):
            runs = " ".join(f"{s:.2f}" for s in m.seconds)
            print(f"{m.name:40} {m.median:9.2f}  {runs:<24} {m.peak_mb:12.1f}")
        ratio = check.median / plan.median
        print(f"\ncheck/plan = {ratio:.2f}  (goal <= {GOAL:.1f}: {'met' if ratio <= GOAL else 'MISSED'})")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
