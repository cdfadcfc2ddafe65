"""Every error a copy step raises, in one place."""

from __future__ import annotations

from orchestrator.errors import EXIT_BAD_INPUT, EXIT_NEEDS_ATTENTION, EXIT_STEP_FAILED, MigrateError


class CopyError(MigrateError):
    """Base of the errors a copy step raises."""

    exit_code = EXIT_STEP_FAILED


class CopyPreflightError(CopyError):
    """Bad input found before any row moved: a table, a column or the key is wrong."""

    exit_code = EXIT_BAD_INPUT


class CopyFailedError(CopyError):
    """The copy step failed; the rows it had inserted were removed."""


class CopyValueError(CopyFailedError):
    """A value cannot be written to the target column exactly."""

    def __init__(self, message: str, hint: str | None = None, *, column: str | None, key: str):
        super().__init__(message, hint)
        self.column = column
        self.key = key


class CopyVerificationError(CopyFailedError):
    """Source and target disagree after the copy."""

    def __init__(self, message: str, hint: str | None = None, *, key: str | None):
        super().__init__(message, hint)
        self.key = key


class CopyConflictError(CopyFailedError):
    """A row already in the target has the key of a source row but other values."""

    def __init__(self, message: str, hint: str | None = None, *, key: str):
        super().__init__(message, hint)
        self.key = key


class CopyRevertError(CopyError):
    """A revert, or the clean-up after a failed copy, could not complete."""

    exit_code = EXIT_NEEDS_ATTENTION
