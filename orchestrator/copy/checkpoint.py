"""What a copy remembers between runs: the checkpoint and the pre-existing target keys."""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from orchestrator.copy.values import (
    decode_value,
    encode_value,
)

ProgressCallback = Callable[[int, "int | None"], None]
CutoverState = Literal["pending", "cutting", "done"]
CUTOVER_STATES: tuple[CutoverState, ...] = ("pending", "cutting", "done")


@dataclass(frozen=True)
class PreexistingKeys:
    """The target keys that were there before the copy began, in canonical form.

    A single-column integer key is kept as inclusive runs ``[first, last]`` (a pre-filled table
    with contiguous ids costs two numbers); any other key is kept as the list of canonical key
    tuples. Rows with these keys are never written, counted as copied, reverted or deleted.
    """

    count: int = 0
    ranges: tuple[tuple[int, int], ...] = ()
    keys: tuple[tuple[str | None, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", [r[0] for r in self.ranges])
        object.__setattr__(self, "_set", frozenset(self.keys))

    def __bool__(self) -> bool:
        return self.count > 0

    def contains(self, canon_key: tuple[str | None, ...]) -> bool:
        if not self.count:
            return False
        if self.ranges:
            try:
                n = int(canon_key[0])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
            i = bisect_right(self._starts, n) - 1  # type: ignore[attr-defined]
            return i >= 0 and self.ranges[i][0] <= n <= self.ranges[i][1]
        return canon_key in self._set  # type: ignore[attr-defined]

    def to_obj(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        if self.ranges:
            out["ranges"] = [list(r) for r in self.ranges]
        if self.keys:
            out["keys"] = [list(k) for k in self.keys]
        return out

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> PreexistingKeys:
        return cls(
            count=int(obj.get("count", 0)),
            ranges=tuple((int(a), int(b)) for a, b in obj.get("ranges", ())),
            keys=tuple(tuple(k) for k in obj.get("keys", ())),
        )

    @classmethod
    def build(cls, canon_keys: Iterable[tuple[str | None, ...]], integer_key: bool) -> PreexistingKeys:
        if integer_key:
            runs: list[list[int]] = []
            count = 0
            for (text,) in canon_keys:
                n = int(text)  # type: ignore[arg-type]
                count += 1
                if runs and runs[-1][1] + 1 == n:
                    runs[-1][1] = n
                elif runs and runs[-1][0] <= n <= runs[-1][1]:
                    continue
                else:
                    runs.append([n, n])
            runs.sort()
            return cls(count=count, ranges=tuple((a, b) for a, b in runs))
        keys = sorted(set(canon_keys), key=lambda k: tuple("" if x is None else x for x in k))
        return cls(count=len(keys), keys=tuple(keys))


# --- checkpoints -------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "migrate-copy-checkpoint/1"


@dataclass(frozen=True)
class CopyCheckpoint:
    """Where a copy stands; the executor keeps ``to_json()`` in its journal."""

    last_key: tuple[object, ...] | None  # last key copied and committed (None: nothing yet)
    rows_copied: int
    preexisting: PreexistingKeys = field(default_factory=PreexistingKeys)
    rows_skipped: int = 0
    # Where the copy stands against its cut-over (SPEC section 9): "pending" (copied and
    # verified; the source is still the truth), "cutting" (the cut-over began: the `before`
    # revision may have run), "done"; None for a copy still running, or one recorded before
    # cut-overs existed (treated as cut over: its revert carries rows back).
    cutover: CutoverState | None = None
    blocked_seconds: float | None = None  # how long the cut-over blocked writers

    @property
    def cut_over(self) -> bool:
        """Whether the copy has surely cut over ("done", or recorded before cut-overs existed).
        Otherwise, as long as the source table is there, the source is the truth and a revert
        only deletes the copied rows: a cut-over that stopped ("cutting") with its `before`
        revision rolled back, or not yet run, left the source taking writes."""
        return self.cutover not in ("pending", "cutting")

    def with_cutover(self, state: CutoverState | None, blocked_seconds: float | None = None) -> CopyCheckpoint:
        return replace(self, cutover=state, blocked_seconds=blocked_seconds)

    def to_json(self) -> str:
        obj: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "last_key": None if self.last_key is None else [encode_value(v) for v in self.last_key],
            "rows_copied": self.rows_copied,
            "rows_skipped": self.rows_skipped,
            "preexisting": self.preexisting.to_obj(),
        }
        if self.cutover is not None:
            obj["cutover"] = self.cutover
        if self.blocked_seconds is not None:
            obj["blocked_seconds"] = round(self.blocked_seconds, 6)
        return json.dumps(obj, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CopyCheckpoint:
        obj = json.loads(text)
        if obj.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a copy checkpoint: format {obj.get('format')!r}")
        last = obj.get("last_key")
        return cls(
            last_key=None if last is None else tuple(decode_value(v) for v in last),
            rows_copied=int(obj["rows_copied"]),
            preexisting=PreexistingKeys.from_obj(obj.get("preexisting") or {}),
            rows_skipped=int(obj.get("rows_skipped", 0)),
            cutover=_cutover_state(obj.get("cutover")),
            blocked_seconds=obj.get("blocked_seconds"),
        )


def _cutover_state(value: object) -> CutoverState | None:
    if value is None:
        return None
    if value not in CUTOVER_STATES:
        raise ValueError(f"not a cut-over state: {value!r}")
    return value


class CheckpointStore(Protocol):
    def load(self) -> CopyCheckpoint | None: ...

    def save(self, checkpoint: CopyCheckpoint) -> None: ...  # called after each target commit
