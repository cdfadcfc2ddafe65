"""Per-step overhead of `migrate apply` against calling Alembic directly, and --jobs speed-up.

    python -m benchmarks.apply_overhead.run [--services 10] [--revisions 30] [--rounds 3]

1. Overhead: N services x M revisions on PostgreSQL (one database per service). The
   baseline is a Python process that calls Alembic's ``command.upgrade(cfg, "head")`` for each
   service in turn, with the same env.py (one transaction per revision). It is compared with
   a `migrate apply` process (journal, lock, advisory locks, state checks included). Both
   start from empty databases; the median of the rounds is compared. Goal: ratio <= 1.15.
2. Parallel: every revision runs ``SELECT pg_sleep(0.2)``; `migrate apply --jobs 4` against
   `--jobs 1` on the same workspace. Goal: ratio <= 0.35.

Ratios are printed, never a bare time as pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

SERVER = os.environ.get("MIGRATE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MIGRATE = str(Path(sys.executable).with_name("migrate"))

ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""

REVISION = '''"""{svc} step {i}"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None
requires = {requires!r}


def upgrade():
{body}


def downgrade():
    op.drop_table("t_{rev}")
'''

TABLE = """    op.create_table(
        "t_{rev}",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, server_default=sa.func.now()),
    )
    op.create_index("ix_t_{rev}_name", "t_{rev}", ["name"])"""

BASELINE = """
import sys
from alembic import command
from alembic.config import Config
for location, url in zip(sys.argv[1::2], sys.argv[2::2]):
    cfg = Config()
    cfg.set_main_option("script_location", location)
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head")
"""


def rev_id(s: int, i: int) -> str:
    return f"{s:03d}{i:03d}aabbcc"


def make_workspace(root: Path, services: int, revisions: int, sleep: float = 0.0) -> list[str]:
    names = [f"svc{s:02d}" for s in range(services)]
    for s, name in enumerate(names):
        folder = root / name
        (folder / "versions").mkdir(parents=True)
        (folder / "env.py").write_text(ENV_PY)
        for i in range(revisions):
            requires = [f"svc{s - 1:02d}@{rev_id(s - 1, i)}"] if s and i == revisions // 2 else []
            body = TABLE.format(rev=rev_id(s, i))
            if sleep:
                body += f'\n    op.execute("SELECT pg_sleep({sleep})")'
            (folder / "versions" / f"{rev_id(s, i)}.py").write_text(
                REVISION.format(
                    svc=name, i=i, rev=rev_id(s, i), down=rev_id(s, i - 1) if i else None, requires=requires, body=body
                )
            )
    return names


def write_manifest(root: Path, names: list[str], urls: dict[str, str]) -> Path:
    lines = ['default_env = "bench"', ""]
    for name in names:
        lines += [f"[services.{name}]", f'script_location = "{name}"', ""]
    lines += ["[envs.bench.urls]"] + [f'{n} = "{urls[n]}"' for n in names]
    path = root / "migrate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Databases:
    def __init__(self) -> None:
        self.admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def fresh(self, names: list[str]) -> dict[str, str]:
        urls = {}
        with self.admin.connect() as conn:
            for name in names:
                db = f"applybench_{uuid.uuid4().hex[:10]}"
                conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
                self.created.append(db)
                urls[name] = f"{SERVER}/{db}"
        return urls

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for db in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        self.created.clear()
        self.admin.dispose()


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def overhead(services: int, revisions: int, rounds: int, dbs: Databases) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = make_workspace(root, services, revisions)
        base_times, migrate_times = [], []
        for _ in range(rounds):
            urls = dbs.fresh(names)
            args = [a for n in names for a in (str(root / n), urls[n])]
            base_times.append(timed([sys.executable, "-c", BASELINE, *args]))
            urls = dbs.fresh(names)
            manifest = write_manifest(root, names, urls)
            migrate_times.append(timed([MIGRATE, "--config", str(manifest), "apply", "--env", "bench"]))
            dbs.drop_all()
            dbs.__init__()  # type: ignore[misc]
        base, ours = statistics.median(base_times), statistics.median(migrate_times)
        steps = services * revisions
        print(f"apply overhead: {services} services x {revisions} revisions on PostgreSQL ({steps} steps)")
        print(f"  alembic command.upgrade, service by service: {base:.2f} s ({base / steps * 1000:.1f} ms/step)")
        print(f"  migrate apply (journal, locks, checks):      {ours:.2f} s ({ours / steps * 1000:.1f} ms/step)")
        ratio = ours / base
        print(f"  ratio migrate/alembic = {ratio:.3f}  (goal <= 1.15)")
        return ratio


def parallel(services: int, revisions: int, dbs: Databases) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = make_workspace(root, services, revisions, sleep=0.2)
        times = {}
        for jobs in (1, 4):
            urls = dbs.fresh(names)
            manifest = write_manifest(root, names, urls)
            times[jobs] = timed([MIGRATE, "--config", str(manifest), "apply", "--env", "bench", "--jobs", str(jobs)])
        ratio = times[4] / times[1]
        print(f"parallel: {services} services x {revisions} revisions, each sleeping 0.2 s in PostgreSQL")
        print(f"  --jobs 1: {times[1]:.2f} s   --jobs 4: {times[4]:.2f} s")
        print(f"  ratio jobs4/jobs1 = {ratio:.3f}  (goal <= 0.35)")
        return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--revisions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel-revisions", type=int, default=10)
    parser.add_argument("--skip-parallel", action="store_true")
    args = parser.parse_args()
    dbs = Databases()
    try:
        overhead(args.services, args.revisions, args.rounds, dbs)
        if not args.skip_parallel:
            parallel(args.services, args.parallel_revisions, dbs)
    finally:
        dbs.drop_all()


if __name__ == "__main__":
    main()
