"""The one error hierarchy the CLI catches.

Library code raises these where a condition arises; the CLI prints ``message`` and ``hint``
and exits with ``exit_code``. Anything else escaping to the CLI is a bug and shows its
traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CONFLICT = 3
EXIT_NEEDS_ATTENTION = 4


class MigrateError(Exception):
    """Base of every error the user is meant to see."""

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"error": self.message, "exit_code": self.exit_code}
        if self.hint:
            out["hint"] = self.hint
        return out


class ManifestError(MigrateError):
    """The manifest is missing, unreadable or invalid. Names the file and the key."""

    def __init__(self, message: str, *, file: str, key: str | None = None, hint: str | None = None):
        where = f"{file}" + (f", key '{key}'" if key else "")
        super().__init__(f"{where}: {message}", hint)
        self.file = file
        self.key = key


class GraphError(MigrateError):
    """The dependency graph cannot be built."""


class CycleError(GraphError):
    def __init__(self, path: Sequence[str]):
        self.path = tuple(path)
        super().__init__(
            "dependency cycle: " + " -> ".join(self.path),
            "remove one of these edges (a `requires`, `after` or `before`) so the order is acyclic",
        )


class UnknownReferenceError(GraphError):
    def __init__(self, ref: str, where: str, suggestions: Sequence[str] = ()):
        self.ref = ref
        self.where = where
        self.suggestions = tuple(suggestions)
        hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else None
        super().__init__(f"{where}: unknown reference '{ref}'", hint)


class AmbiguousReferenceError(GraphError):
    def __init__(self, ref: str, where: str, candidates: Sequence[str]):
        self.ref = ref
        self.candidates = tuple(candidates)
        super().__init__(
            f"{where}: '{ref}' is ambiguous; it matches {', '.join(candidates)}",
            "use more characters of the revision id",
        )


class DatabaseUnreachableError(MigrateError):
    """A database could not be reached; the URL in the message is already redacted."""


class PlanConflictError(MigrateError):
    """A plan file is stale, tampered with, or made for another environment."""

    exit_code = EXIT_CONFLICT


class LockHeldError(MigrateError):
    exit_code = EXIT_CONFLICT


class ConfirmationNeededError(MigrateError):
    """An action needs --yes or, on a terminal, the environment's name typed back."""

    def __init__(self, message: str, hint: str | None = None, *, env: str):
        super().__init__(message, hint)
        self.env = env
