"""Run one copy step in a child process, checkpointing into a JSON file (the resume test kills
this process with SIGKILL part-way)."""

from __future__ import annotations

import sys

from orchestrator.copy import copy_table
from tests.copy.helpers import FileStore, engine, spec


def main() -> None:
    source_url, target_url, checkpoint_path, batch_size, rate = sys.argv[1:6]
    copy_spec = spec(
        name="events-copy",
        table="events",
        batch_size=int(batch_size),
        max_rows_per_second=float(rate) or None,
    )
    copy_table(copy_spec, engine(source_url), engine(target_url), FileStore(checkpoint_path))


if __name__ == "__main__":
    main()
