"""The copy engine: copy steps move the rows of a table from one service's database into another's.

Design and layout: docs/copy.md. By job: ``columns`` (column kinds and descriptions, plain
values), ``schema`` (reflection, the copy plan), ``streams`` and ``writers`` (SQL text,
connections, readers, writers), ``blocks`` (SQL the databases run), ``values``, ``convert`` and
``keys`` (what values mean, conversions for the target, canonical forms), ``checkpoint``,
``copier``, ``pipeline``, ``preexisting`` and ``engine`` (the copy itself), ``verify``,
``cutover``, ``revert`` and ``errors``; per-dialect behaviour in ``dialects/``, one class per database.
"""

from orchestrator.copy.checkpoint import CheckpointStore, CopyCheckpoint, PreexistingKeys, ProgressCallback
from orchestrator.copy.copier import CopyResult, RevertResult
from orchestrator.copy.engine import copy_table, estimate_rows, preflight
from orchestrator.copy.errors import (
    CopyConflictError,
    CopyError,
    CopyFailedError,
    CopyPreflightError,
    CopyRevertError,
    CopyValueError,
    CopyVerificationError,
)
from orchestrator.copy.revert import RevertPreview, preview_revert, revert_copy
from orchestrator.copy.verify import checksum_table

__all__ = [
    "CheckpointStore",
    "CopyCheckpoint",
    "CopyConflictError",
    "CopyError",
    "CopyFailedError",
    "CopyPreflightError",
    "CopyResult",
    "CopyRevertError",
    "CopyValueError",
    "CopyVerificationError",
    "PreexistingKeys",
    "ProgressCallback",
    "RevertPreview",
    "RevertResult",
    "checksum_table",
    "copy_table",
    "estimate_rows",
    "preflight",
    "preview_revert",
    "revert_copy",
]
