"""``--since REF``: which files changed, as git sees them (reads the work tree, no database)."""

from __future__ import annotations

import os
import subprocess

from orchestrator.errors import MigrateError


def _git(args: list[str], cwd: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise MigrateError("--since needs git, which is not on PATH", "install git or drop --since") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise MigrateError(
            f"git {' '.join(args)} failed in {cwd}: {detail[0] if detail else f'exit code {proc.returncode}'}",
            "--since takes a commit, branch or tag of the repository that holds the manifest "
            "(in CI, fetch it first, e.g. `git fetch origin main` and --since origin/main)",
        )
    return proc.stdout


def changed_files(folder: str, ref: str) -> frozenset[str]:
    """Real paths of the files added or changed since ``ref`` (``git diff --name-only REF``,
    committed or not) plus the untracked ones, in the repository that holds ``folder``."""
    top = _git(["rev-parse", "--show-toplevel"], folder).strip()
    _git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], folder)
    diff = _git(["diff", "--name-only", "-z", ref, "--"], top)
    untracked = _git(["ls-files", "--others", "--exclude-standard", "-z", "--full-name"], top)
    names = [n for n in (diff + untracked).split("\0") if n]
    return frozenset(os.path.realpath(os.path.join(top, n)) for n in names)
