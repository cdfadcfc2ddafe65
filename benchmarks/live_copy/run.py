"""Live copies (follow mode) with a writer on the source, against the same copy without one.

    .venv/bin/python -m benchmarks.live_copy.run                    # 1,000,000 and 100,000 rows
    .venv/bin/python -m benchmarks.live_copy.run --rows 50000       # a quick smoke run

PostgreSQL -> PostgreSQL. A writer thread commits updates and inserts to the source at a
steady rate (500 per second by default), one transaction each, and records each write's
latency. For --rows and --rows / 10 it measures, in one run:

* the writers' block at cut-over: the longest write latency the writer saw, against its
  median, and the block as the cut-over measured it (goal: <= 0.5 s, not growing with rows);
* end-to-end time of the follow-mode copy and its cut-over with the writer, against the same
  copy in snapshot mode with no writer (goal: <= 1.3 x);
* the lag left when the block was taken: log entries drained under it (goal: <= one batch);
* the capture triggers' cost to a writer: its writes per second with capture on, against off.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from benchmarks.copy_throughput.run import create_db, drop_db, run_sql
from orchestrator.copy import CopyCheckpoint, copy_table
from orchestrator.copy.capture import Capture
from orchestrator.copy.cutover import cut_over_alone
from orchestrator.copy.schema import build_plan
from orchestrator.core.model import CopySpec

DDL = (
    "CREATE TABLE events (id bigint PRIMARY KEY, account_id integer NOT NULL, title varchar(255) NOT NULL, "
    "amount numeric(12,2) NOT NULL, created_at timestamp NOT NULL, note text)"
)
FILL = (
    "INSERT INTO events SELECT i, mod(i, 1000), 'order ' || i || ' - café', mod(i, 100000) / 100.0, "
    "timestamp '2020-01-01' + i * interval '1 second', CASE WHEN mod(i, 7) = 0 THEN NULL "
    "ELSE 'delivered to the front desk ' || i END FROM generate_series(1, {n}) i"
)
BATCH = 50_000  # the copy's batch_size (its default)


class Store:
    def __init__(self) -> None:
        self.c: CopyCheckpoint | None = None

    def load(self) -> CopyCheckpoint | None:
        return self.c

    def save(self, c: CopyCheckpoint) -> None:
        self.c = c


def _write(url: str, rows: int, rate: float, stop: Any, out: Any) -> None:
    """The writer process: updates (2 in 3) and inserts (1 in 3) rows of the source, one
    transaction each, at ``rate`` per second (0: as fast as it can), until ``stop`` is set;
    then sends (each write's latency, seconds it ran)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    latencies: list[float] = []
    n, started = 0, time.monotonic()
    next_at = started
    with engine.connect() as conn:
        while not stop.is_set():
            n += 1
            began = time.monotonic()
            with conn.begin():
                if n % 3:
                    conn.exec_driver_sql(f"UPDATE events SET note = 'w{n}' WHERE id = {(n * 7919) % rows + 1}")
                else:
                    conn.exec_driver_sql(
                        "INSERT INTO events SELECT id + 100000000, account_id, title, amount, created_at, "
                        f"note FROM events WHERE id = {n % rows + 1} ON CONFLICT DO NOTHING"
                    )
            latencies.append(time.monotonic() - began)
            if rate:
                next_at += 1 / rate
                time.sleep(max(0.0, next_at - time.monotonic()))
    out.send((latencies, time.monotonic() - started))
    engine.dispose()


class Writer:
    """A writer in a process of its own, as an application is (a thread would compete with
    the copy for the interpreter lock)."""

    def __init__(self, url: str, rows: int, rate: float):
        ctx = multiprocessing.get_context("fork")
        self.stop = ctx.Event()
        self._theirs, self._ours = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_write, args=(url, rows, rate, self.stop, self._ours), daemon=True)
        self.latencies: list[float] = []
        self.seconds = 0.0

    def start(self) -> None:
        self.process.start()

    def join(self) -> None:
        self.stop.set()
        self.latencies, self.seconds = self._theirs.recv()
        self.process.join()

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds


def snapshot_alone(source_url: str, target_url: str) -> float:
    """Seconds of the snapshot-mode copy with no writer (its verification included)."""
    spec = CopySpec("bench", "src", "dst", "events", "events", batch_size=BATCH)
    source, target = sa.create_engine(source_url), sa.create_engine(target_url)
    try:
        began = time.monotonic()
        copy_table(spec, source, target, Store())
        return time.monotonic() - began
    finally:
        source.dispose()
        target.dispose()


def follow_with_writer(source_url: str, target_url: str, rows: int, rate: float) -> dict[str, float]:
    spec = CopySpec("bench", "src", "dst", "events", "events", batch_size=BATCH, mode="follow")
    source, target = sa.create_engine(source_url), sa.create_engine(target_url)
    writer = Writer(source_url, rows, rate)
    writer.start()
    time.sleep(1.0)  # the writer's latency before anything runs
    try:
        store = Store()
        began = time.monotonic()
        copy_table(spec, source, target, store)
        assert store.c is not None
        done = cut_over_alone(build_plan(spec, source, target), source, target, store.c.preexisting)
        seconds = time.monotonic() - began
        time.sleep(0.5)
    finally:
        writer.join()
        source.dispose()
        target.dispose()
    return {
        "seconds": seconds,
        "blocked": done.blocked,
        "lag": done.drained.entries,
        "compared": done.drained.compared,
        "max_latency": max(writer.latencies),
        "median_latency": statistics.median(writer.latencies),
        "writes": len(writer.latencies),
    }


def trigger_cost(url: str, rows: int, seconds: float = 2.0) -> tuple[float, float]:
    """A writer's writes per second as fast as it can, with capture off, then on."""

    def measure() -> float:
        writer = Writer(url, rows, 0)
        writer.start()
        time.sleep(seconds)
        writer.join()
        return writer.per_second

    spec = CopySpec("bench", "src", "dst", "events", "events", mode="follow")
    source = sa.create_engine(url)
    # the plan needs a target table: the source's own will do, nothing is copied
    capture = Capture(build_plan(spec, source, source), source)
    measure()  # warm up: caches, the table's pages
    offs, ons = [], []
    try:
        for _ in range(2):  # alternating, so that drift hits both alike
            offs.append(measure())
            capture.install()
            ons.append(measure())
            capture.remove()
    finally:
        capture.remove()
        source.dispose()
    return statistics.median(offs), statistics.median(ons)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=500.0, help="the writer's writes per second")
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:6]
    made: list[str] = []

    def db(name: str, rows: int | None = None) -> str:
        made.append(f"bench_live_{name}_{tag}")
        url = create_db("pg", made[-1])
        run_sql(url, DDL, *([FILL.format(n=rows)] if rows else []))
        return url

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    try:
        print(f"live copy, PostgreSQL -> PostgreSQL, writer at {args.rate:g} writes/s", flush=True)
        figures = {}
        for rows in (args.rows // 10, args.rows):
            base = snapshot_alone(db(f"s{rows}", rows), db(f"st{rows}"))
            live = follow_with_writer(db(f"f{rows}", rows), db(f"ft{rows}"), rows, args.rate)
            figures[rows] = live
            print(f"\n[{rows:,} rows]", flush=True)
            print(f"  snapshot copy, no writer:           {base:.2f} s")
            print(f"  follow copy + cut-over, writer on:  {live['seconds']:.2f} s  ({int(live['writes'])} writes)")
            print(f"  writers blocked (as measured):      {ms(live['blocked'])}")
            print(f"  writer latency, max / median:       {ms(live['max_latency'])} / {ms(live['median_latency'])}")
            lag, compared = int(live["lag"]), int(live["compared"])
            print(f"  lag when blocked:                   {lag} entries, {compared} rows compared")
            print(f"  ratio end-to-end follow+writer / snapshot alone: {live['seconds'] / base:.2f}  (goal <= 1.3)")
        small, big = figures[args.rows // 10], figures[args.rows]
        print("\n[writers' block]")
        print(f"  max write latency at {args.rows:,} rows: {ms(big['max_latency'])}  (goal <= 500 ms)")
        print(
            f"  ratio max latency {args.rows:,} / {args.rows // 10:,} rows: "
            f"{big['max_latency'] / small['max_latency']:.2f}  (goal ~1: the block does not grow)"
        )
        print(f"  ratio max / median latency at {args.rows:,} rows: {big['max_latency'] / big['median_latency']:.1f}")
        off, on = trigger_cost(db("trig", 100_000), 100_000)
        print("\n[capture triggers' cost to a writer, as fast as it can]")
        print(f"  {off:,.0f} writes/s off, {on:,.0f} on: ratio on / off {on / off:.2f}")
    finally:
        for name in made:
            drop_db("pg", name)


if __name__ == "__main__":
    main()
