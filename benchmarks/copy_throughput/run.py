"""Copy throughput and memory of `copy_table` against the best existing ways, in one run.

    .venv/bin/python -m benchmarks.copy_throughput.run --rows 1000000
    .venv/bin/python -m benchmarks.copy_throughput.run --rows 20000      # smoke run

Prints ratios (baseline seconds / our seconds: above 1 means we are faster) and peak RSS.
Every copy of ours runs in a child process, so its peak RSS is its own; its time includes the
end-of-copy verification (count + checksum of both tables), which no baseline does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
PG_SERVER = os.environ.get("MIGRATE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
MYSQL_SERVER = os.environ.get("MIGRATE_BENCH_MYSQL", "mysql+pymysql://root@127.0.0.1:3306")
COLUMNS = ("id", "account_id", "title", "amount", "created_at", "note", "active")

PG_DDL = (
    "CREATE TABLE events (id bigint PRIMARY KEY, account_id integer NOT NULL, "
    "title varchar(255) NOT NULL, amount numeric(12,2) NOT NULL, created_at timestamp NOT NULL, "
    "note text, active boolean NOT NULL)"
)
MYSQL_DDL = (
    "CREATE TABLE events (id bigint PRIMARY KEY, account_id int NOT NULL, "
    "title varchar(255) NOT NULL, amount decimal(12,2) NOT NULL, created_at datetime(6) NOT NULL, "
    "note text, active boolean NOT NULL) CHARACTER SET utf8mb4"
)
SQLITE_DDL = (
    "CREATE TABLE events (id BIGINT PRIMARY KEY, account_id INTEGER NOT NULL, "
    "title VARCHAR(255) NOT NULL, amount NUMERIC(12, 2) NOT NULL, created_at DATETIME NOT NULL, "
    "note TEXT, active BOOLEAN NOT NULL)"
)

CHILD = """
import json, os, sys, time
import sqlalchemy as sa
from orchestrator.core.model import CopySpec
from orchestrator.copy import CopyCheckpoint, copy_table

class Store:
    def __init__(self): self.c = None
    def load(self): return self.c
    def save(self, c): self.c = c

src, dst = sys.argv[1], sys.argv[2]
spec = CopySpec(name="bench", source="a", target="b", table="events", target_table="events")
t0 = time.perf_counter()
r = copy_table(spec, sa.create_engine(src), sa.create_engine(dst), Store())
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": r.rows_copied, "method": r.method,
                  "checksum": r.checksum}))
"""


# --- servers and data --------------------------------------------------------------------------


def admin(kind: str) -> sa.Engine:
    url = f"{PG_SERVER}/postgres" if kind == "pg" else f"{MYSQL_SERVER}/"
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def create_db(kind: str, name: str) -> str:
    with admin(kind).connect() as conn:
        if kind == "pg":
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        else:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    if kind == "pg":
        return f"{PG_SERVER}/{name}"
    return f"{MYSQL_SERVER}/{name}?charset=utf8mb4"


def drop_db(kind: str, name: str) -> None:
    with admin(kind).connect() as conn:
        if kind == "pg":
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")


def run_sql(url: str, *statements: str) -> None:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with eng.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    eng.dispose()


def scalar(url: str, statement: str) -> Any:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        value = conn.exec_driver_sql(statement).scalar()
    eng.dispose()
    return value


def fill_sqlite(path: Path, rows: int) -> str:
    """1M realistic rows: ~40-char nullable notes, cents, microsecond timestamps, unicode."""
    import sqlite3

    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path)
    conn.execute(SQLITE_DDL)
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO events SELECT i, abs(random() % 1000000), "
        "'order ' || i || ' for customer ' || abs(random() % 100000) || ' - café', "
        "abs(random() % 100000000) / 100.0, "
        "strftime('%Y-%m-%d %H:%M:%S', 1500000000 + i * 53, 'unixepoch') || '.' || "
        "printf('%06d', abs(random() % 1000000)), "
        "CASE WHEN i % 7 = 0 THEN NULL ELSE 'delivered to the front desk, ref ' || "
        "printf('%08d', abs(random() % 100000000)) END, "
        "abs(random() % 2) FROM s",
        (rows,),
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def fill_mysql(url: str, rows: int) -> None:
    run_sql(
        url,
        MYSQL_DDL,
        "INSERT INTO events SELECT seq, FLOOR(RAND(1) * 1000000), "
        "CONCAT('order ', seq, ' for customer ', FLOOR(RAND() * 100000), ' - café'), "
        "ROUND(RAND() * 1000000, 2), "
        "TIMESTAMPADD(MICROSECOND, FLOOR(RAND() * 1000000), "
        "TIMESTAMPADD(SECOND, seq * 53, '2017-07-14 02:40:00')), "
        f"IF(seq %% 7 = 0, NULL, CONCAT('delivered to the front desk, ref ', "
        f"LPAD(FLOOR(RAND() * 100000000), 8, '0'))), "
        f"RAND() < 0.5 FROM seq_1_to_{int(rows)}",
    )


def fill_pg_from(url: str, sqlite_path: Path) -> None:
    run_sql(url, PG_DDL)
    sqlite_to_pg_cli(sqlite_path, url)
    # freshly loaded rows carry no hint bits: the first reader would set them (writing every
    # page) on behalf of whoever reads next; VACUUM does it once, before anyone is timed
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with eng.connect() as conn:
        conn.exec_driver_sql("VACUUM ANALYZE events")
    eng.dispose()


def settle(mysql_url: str | None = None) -> None:
    """Start every timed contender from the same state: no dirty buffers left by the previous
    run (or by the fill) for the servers to write out during this one."""
    with admin("pg").connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")
    if mysql_url is not None:
        eng = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
        with eng.connect() as conn:
            conn.exec_driver_sql("FLUSH TABLES events FOR EXPORT")  # writes the table's dirty pages
            conn.exec_driver_sql("UNLOCK TABLES")
        eng.dispose()


# --- the contenders ----------------------------------------------------------------------------


def psql_args(url: str) -> list[str]:
    parsed = sa.engine.make_url(url)
    return [
        "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(parsed.host), "-p", str(parsed.port or 5432),
        "-U", str(parsed.username), "-d", str(parsed.database),
    ]  # fmt: skip


def ours(source: str, target: str) -> dict[str, Any]:
    """copy_table in a child process; returns its seconds, peak RSS (MiB) and result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, source, target], stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"our copy failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["rss_mib"] = usage.ru_maxrss / 1024
    return result


def sqlite_to_pg_cli(sqlite_path: Path, pg_url: str) -> float:
    select = f"SELECT {', '.join(COLUMNS)} FROM events"
    t0 = time.perf_counter()
    reader = subprocess.Popen(["sqlite3", "-csv", str(sqlite_path), select], stdout=subprocess.PIPE)
    writer = subprocess.run(
        [*psql_args(pg_url), "-c", "\\copy events FROM STDIN (FORMAT csv)"],
        stdin=reader.stdout,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    reader.wait()
    assert writer.returncode == 0 and reader.returncode == 0
    return time.perf_counter() - t0


def pg_to_pg_cli(src_url: str, dst_url: str) -> float:
    select = f"SELECT {', '.join(COLUMNS)} FROM events"
    t0 = time.perf_counter()
    reader = subprocess.Popen(
        [*psql_args(src_url), "-c", f"\\copy ({select}) TO STDOUT (FORMAT binary)"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(
        [*psql_args(dst_url), "-c", "\\copy events FROM STDIN (FORMAT binary)"],
        stdin=reader.stdout,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    reader.wait()
    return time.perf_counter() - t0


def pgloader(mysql_url: str, pg_url: str, workdir: Path) -> float | None:
    if shutil.which("pgloader") is None:
        return None
    m, p = sa.engine.make_url(mysql_url), sa.engine.make_url(pg_url)
    command = workdir / "events.load"
    command.write_text(
        f"LOAD DATABASE\n FROM mysql://{m.username}@{m.host}:{m.port or 3306}/{m.database}\n"
        f" INTO postgresql://{p.username}@{p.host}:{p.port or 5432}/{p.database}\n"
        " WITH data only, truncate, workers = 4, concurrency = 1, prefetch rows = 25000\n"
        " INCLUDING ONLY TABLE NAMES MATCHING 'events'\n"
        f" ALTER SCHEMA '{m.database}' RENAME TO 'public'\n;\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run(["pgloader", str(command)], capture_output=True, cwd=workdir)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:])
        return None
    return seconds


def outfile_then_copy(mysql_url: str, pg_url: str, workdir: Path) -> float | None:
    """MariaDB writes a tab-separated file on its host, psql loads it with COPY."""
    path = Path(tempfile.mkdtemp(prefix="outfile-", dir="/var/tmp")) / f"events-{uuid.uuid4().hex}.tsv"
    os.chmod(path.parent, 0o777)
    t0 = time.perf_counter()
    try:
        run_sql(mysql_url, f"SELECT {', '.join(COLUMNS)} FROM events INTO OUTFILE '{path}'")
    except sa.exc.DBAPIError as exc:
        sys.stderr.write(f"SELECT ... INTO OUTFILE is not possible here: {exc.orig}\n")
        return None
    subprocess.run(
        [*psql_args(pg_url), "-c", f"\\copy events FROM '{path}' (FORMAT text)"],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    seconds = time.perf_counter() - t0
    shutil.rmtree(path.parent, ignore_errors=True)
    return seconds


# --- the run -----------------------------------------------------------------------------------


def fresh_pg(name: str, made: list[tuple[str, str]]) -> str:
    url = create_db("pg", name)
    made.append(("pg", name))
    run_sql(url, PG_DDL)
    return url


def check_rows(url: str, rows: int, label: str) -> None:
    got = int(scalar(url, "SELECT count(*) FROM events"))
    if got != rows:
        raise SystemExit(f"{label}: expected {rows} rows in the target, found {got}")


def ratio(baseline: float | None, mine: float) -> str:
    if baseline is None:
        return "n/a"
    return f"{baseline / mine:.2f}x"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--memory-factor", type=int, default=3, help="second memory size / --rows")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".work" / "copy")
    args = parser.parse_args(argv)
    n = args.rows
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    made: list[tuple[str, str]] = []
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    try:
        say(f"copy throughput, {n:,} rows of events(bigint, int, varchar(255), numeric(12,2), "
            "timestamp, text ~40 chars nullable, boolean)")  # fmt: skip
        sqlite_url = fill_sqlite(work / "events.db", n)
        sqlite_path = work / "events.db"
        mysql_name = f"bench_copy_src_{tag}"
        mysql_url = create_db("mysql", mysql_name)
        made.append(("mysql", mysql_name))
        fill_mysql(mysql_url, n)

        # MariaDB -> PostgreSQL
        say("\n[MariaDB -> PostgreSQL]")
        ours_url = fresh_pg(f"bench_m2p_ours_{tag}", made)
        settle(mysql_url)
        mine = ours(mysql_url, ours_url)
        check_rows(PG_SERVER + f"/bench_m2p_ours_{tag}", n, "ours")
        loader_url = fresh_pg(f"bench_m2p_loader_{tag}", made)
        settle(mysql_url)
        loader = pgloader(mysql_url, loader_url, work)
        if loader is not None:
            check_rows(loader_url, n, "pgloader")
        outfile_url = fresh_pg(f"bench_m2p_outfile_{tag}", made)
        settle(mysql_url)
        outfile = outfile_then_copy(mysql_url, outfile_url, work)
        if outfile is not None:
            check_rows(outfile_url, n, "INTO OUTFILE + COPY")
        say(f"  ours ({mine['method']}, incl. verification): {mine['seconds']:.2f} s, "
            f"{n / mine['seconds']:,.0f} rows/s, peak RSS {mine['rss_mib']:.0f} MiB")  # fmt: skip
        if loader is None:
            say("  pgloader: not available (install it with apt-get install -y pgloader)")
        else:
            say(f"  pgloader: {loader:.2f} s   -> ours vs pgloader: {ratio(loader, mine['seconds'])}")
        if outfile is None:
            say("  SELECT INTO OUTFILE + psql COPY: not possible on this server")
        else:
            say(f"  SELECT INTO OUTFILE + psql COPY: {outfile:.2f} s   -> ours vs it: "
                f"{ratio(outfile, mine['seconds'])}")  # fmt: skip

        # SQLite -> PostgreSQL
        say("\n[SQLite -> PostgreSQL]")
        ours_url = fresh_pg(f"bench_s2p_ours_{tag}", made)
        settle()
        mine = ours(sqlite_url, ours_url)
        check_rows(PG_SERVER + f"/bench_s2p_ours_{tag}", n, "ours")
        cli_url = fresh_pg(f"bench_s2p_cli_{tag}", made)
        settle()
        cli = sqlite_to_pg_cli(sqlite_path, cli_url)
        check_rows(cli_url, n, "sqlite3 | psql")
        say(f"  ours ({mine['method']}, incl. verification): {mine['seconds']:.2f} s, "
            f"{n / mine['seconds']:,.0f} rows/s, peak RSS {mine['rss_mib']:.0f} MiB")  # fmt: skip
        say(f"  sqlite3 -csv | psql \\copy (csv): {cli:.2f} s   -> ours vs it: "
            f"{ratio(cli, mine['seconds'])} (goal >= 0.90x)")  # fmt: skip

        # PostgreSQL -> PostgreSQL
        say("\n[PostgreSQL -> PostgreSQL]")
        pg_src = f"bench_p2p_src_{tag}"
        pg_src_url = create_db("pg", pg_src)
        made.append(("pg", pg_src))
        fill_pg_from(pg_src_url, sqlite_path)
        ours_url = fresh_pg(f"bench_p2p_ours_{tag}", made)
        settle()
        mine = ours(pg_src_url, ours_url)
        check_rows(PG_SERVER + f"/bench_p2p_ours_{tag}", n, "ours")
        binary_url = fresh_pg(f"bench_p2p_cli_{tag}", made)
        settle()
        binary = pg_to_pg_cli(pg_src_url, binary_url)
        check_rows(binary_url, n, "psql | psql")
        say(f"  ours ({mine['method']}, incl. verification): {mine['seconds']:.2f} s, "
            f"{n / mine['seconds']:,.0f} rows/s, peak RSS {mine['rss_mib']:.0f} MiB")  # fmt: skip
        say(f"  psql \\copy binary | psql \\copy binary: {binary:.2f} s   -> ours vs it: "
            f"{ratio(binary, mine['seconds'])}")  # fmt: skip

        # memory: SQLite -> PostgreSQL at n and factor * n rows
        big = n * args.memory_factor
        say(f"\n[memory: SQLite -> PostgreSQL, peak RSS of the copying process at {n:,} and {big:,} rows]")
        small_url = fresh_pg(f"bench_mem1_{tag}", made)
        settle()
        small = ours(sqlite_url, small_url)
        big_url = fill_sqlite(work / "events-big.db", big)
        large_url = fresh_pg(f"bench_mem3_{tag}", made)
        settle()
        large = ours(big_url, large_url)
        say(f"  {n:,} rows: {small['rss_mib']:.1f} MiB; {big:,} rows: {large['rss_mib']:.1f} MiB; "
            f"ratio {large['rss_mib'] / small['rss_mib']:.2f} (goal <= 1.20, and under 100 MiB)")  # fmt: skip
        say(f"  throughput at {big:,} rows: {big / large['seconds']:,.0f} rows/s")
        (work / "events-big.db").unlink(missing_ok=True)
    finally:
        for kind, name in made:
            drop_db(kind, name)
    (work / "last-run.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
