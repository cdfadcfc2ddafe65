"""Every process a run starts dies with the process that started it.

A worker that outlived its parent would go on migrating and copying without the locks that
make that safe: its parent held them, and the next run takes them over. So a child process
calls :func:`bind_to_parent` first thing, and then:

* on Linux, the kernel sends it SIGKILL the moment its parent dies (``PR_SET_PDEATHSIG``);
* everywhere, a watchdog thread checks every quarter second that its parent is still the
  process that started it, and ends it at once if not;
* before each journal write and each event it sends, :func:`exit_if_orphaned` checks the same:
  none may write after the lock is lost.

An orphan ends with ``os._exit``: no clean-up code of its own runs, nothing is written, and
the databases roll back whatever transaction its closed connections had open.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.25
ORPHAN_EXIT_CODE = 70  # nobody waits for an orphan; a distinct code for whoever looks

_parent: int | None = None


def bind_to_parent(parent_pid: int) -> None:
    """In a freshly started child: die when ``parent_pid`` (the process that started it) does."""
    global _parent
    _parent = parent_pid
    _kill_me_with_parent()
    # The parent may have died before the kernel knew to tell us: check after asking.
    exit_if_orphaned()
    threading.Thread(target=_watch, name="migrate-parent-watch", daemon=True).start()


def orphaned() -> bool:
    """True in a bound child whose parent has gone (it was re-parented); never in a run's parent."""
    return _parent is not None and os.getppid() != _parent


def exit_if_orphaned() -> None:
    if orphaned():
        os._exit(ORPHAN_EXIT_CODE)


def _kill_me_with_parent() -> None:
    """PR_SET_PDEATHSIG fires when the *thread* that forked this process ends; the executor
    starts its pool from the thread that runs the plan, which outlives every worker. The
    watchdog covers any other case, and every system without prctl."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no usable libc: the watchdog alone stands guard
        return


def _watch() -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        exit_if_orphaned()
