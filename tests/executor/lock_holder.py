"""Hold an environment's lock through the library, as a run does, until killed.

``python -m tests.executor.lock_holder MANIFEST ENV`` takes the lock, records a running run,
renews the lease, prints the run id once it holds the lock, and sleeps.
"""

from __future__ import annotations

import sys
import time

from orchestrator import api
from orchestrator.runtime.journal import Heartbeat, new_run_id, open_journal


def main() -> None:
    manifest, env = sys.argv[1:3]
    project = api.open_project(manifest)
    journal = open_journal(project.manifest, env, project.environ)
    run_id = new_run_id()
    journal.acquire(run_id)
    journal.start_run(run_id, "apply", None, [])
    print(run_id, flush=True)
    with Heartbeat(journal, run_id):
        time.sleep(600)


if __name__ == "__main__":
    main()
