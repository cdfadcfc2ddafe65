"""A writer process for the live-copy tests: inserts, updates and deletes rows of
``addresses`` at a steady rate, each in its own transaction, until told to stop or until the
table is gone. After each commit it appends the write to a JSON-lines file, so the test knows
exactly which writes committed, in order.

    python -m tests.executor.live_writer URL LOG STOP_FILE OPS_PER_SECOND SEED FIRST_ID LAST_ID
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import sqlalchemy as sa

INSERTED_FROM = 5_000_000  # ids of the rows the writer inserts


def main(argv: list[str]) -> int:
    url, log_path, stop_path, rate, seed, first, last = argv
    stop = Path(stop_path)
    rng = random.Random(int(seed))
    ids = list(range(int(first), int(last) + 1))
    rng.shuffle(ids)
    deleted: set[int] = set()
    inserted = INSERTED_FROM
    interval = 1 / float(rate)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with open(log_path, "a", encoding="utf-8") as log, engine.connect() as conn:
        n = 0
        next_at = time.monotonic()
        while not stop.exists():
            n += 1
            kind = ("insert", "update", "update", "delete")[n % 4]
            if kind == "insert":
                inserted += 1
                key, sql = (
                    inserted,
                    (
                        "INSERT INTO addresses (id, user_id, street, city, postcode, country, created_at) "
                        f"SELECT {inserted}, user_id, 'w{n}', city, postcode, country, created_at FROM addresses "
                        f"WHERE id = {first}"
                    ),
                )
            else:
                key = ids[n % len(ids)]
                if key in deleted or key == int(first):
                    continue
                if kind == "delete":
                    deleted.add(key)
                    sql = f"DELETE FROM addresses WHERE id = {key}"
                else:
                    sql = f"UPDATE addresses SET street = 'w{n}' WHERE id = {key}"
            try:
                with conn.begin():
                    conn.execute(sa.text(sql))
            except sa.exc.DBAPIError as exc:
                log.write(json.dumps({"stopped": str(exc.orig).splitlines()[0]}) + "\n")
                log.flush()
                return 0
            log.write(json.dumps({"op": kind, "id": key, "street": f"w{n}"}) + "\n")
            log.flush()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
