"""Small pieces of the copy loop: a run's position, the stream digest, watched iterators."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from orchestrator.copy.checkpoint import (
    CheckpointStore,
    CopyCheckpoint,
    ProgressCallback,
)
from orchestrator.copy.streams import (
    BinaryCopyBody,
    RawConn,
)


class Done:
    """A result already there, shaped like a future."""

    def __init__(self, value: Any):
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        return self.value


class Watched:
    """An iterator that remembers whether it raised."""

    def __init__(self, items: Iterator[Any]):
        self.items = items
        self.failed = False

    def __iter__(self) -> Watched:
        return self

    def __next__(self) -> Any:
        try:
            return next(self.items)
        except StopIteration:
            raise
        except BaseException:
            self.failed = True
            raise


class BatchRun:
    """Where one run of the batches stands."""

    def __init__(self, checkpoint: CopyCheckpoint):
        self.checkpoint = checkpoint
        self.lo = checkpoint.last_key
        self.copied = checkpoint.rows_copied
        self.skipped = checkpoint.rows_skipped
        self.refused = False  # the fast path refused the batch starting at ``lo``

    def batch_done(
        self,
        hi: tuple[Any, ...],
        copied: int,
        skipped: int,
        store: CheckpointStore,
        on_progress: ProgressCallback | None,
        total: int | None,
    ) -> None:
        self.copied += copied
        self.skipped += skipped
        self.checkpoint = CopyCheckpoint(hi, self.copied, self.checkpoint.preexisting, self.skipped)
        store.save(self.checkpoint)
        self.lo = hi
        if on_progress is not None:
            on_progress(self.copied + self.skipped, total)


class StreamDigest:
    """SHA-256 of the source rows in key order, in the exact form the target's ``COPY ... TO
    STDOUT`` gives them back: text lines, or binary tuples without header and trailer."""

    def __init__(self, binary: bool):
        self.binary = binary
        self.hash = hashlib.sha256()
        self.rows = 0
        self.valid = True
        self.body = BinaryCopyBody(self.hash.update) if binary else None

    def add(self, data: bytes, rows: int) -> None:
        self.hash.update(data)
        self.rows += rows

    @property
    def ok(self) -> bool:
        return self.valid and (self.body is None or self.body.valid)


def utf8_session(conn: RawConn) -> bool:
    """Whether a PostgreSQL session reads and writes text as UTF-8 (COPY text is sent as
    bytes)."""
    value = conn.dbapi.pgconn.parameter_status(b"client_encoding")
    return value is not None and bytes(value).upper().replace(b"-", b"") == b"UTF8"


def binary_compatible(source: str | None, target: str | None) -> bool:
    """Whether PostgreSQL's binary COPY format of ``source`` can be read as ``target`` without
    any change of value (same type and modifier, or the target drops the modifier)."""
    if source is None or target is None:
        return False
    if source == target:
        return True
    base_s, base_t = source.split("(")[0].strip(), target.split("(")[0].strip()
    if "(" not in target and base_s == base_t and base_t in ("numeric", "character varying"):
        return True
    return base_s in ("character varying", "text") and target == "text"
