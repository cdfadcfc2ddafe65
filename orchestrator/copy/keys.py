"""The key codec: a copy key's canonical form (what checkpoints, pre-existing keys and
comparisons use) and the values each side's driver takes for it, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.copy.columns import Dialect
from orchestrator.copy.convert import converted, make_writer
from orchestrator.copy.schema import CopyPlan
from orchestrator.copy.values import CanonKey, canon_function, canonical


class KeyCodec:
    """The conversions of one copy's key. ``*_in`` methods take a full row and pick the key
    from it (``plan.key_index``); the others take the key's values alone."""

    def __init__(self, plan: CopyPlan, source: Dialect, target: Dialect):
        self.index = plan.key_index
        self.funcs = [canon_function(k) for k in plan.key_kinds]
        self.target_writers = [make_writer(target, p.target, p.kind) for p in plan.key_pairs]
        self.source_writers = [make_writer(source, p.source, p.kind) for p in plan.key_pairs]

    def _pick(self, row: Sequence[Any]) -> list[Any]:
        return [row[i] for i in self.index]

    def canon(self, key: Sequence[Any]) -> CanonKey:
        return canonical(self.funcs, key)

    def canon_in(self, row: Sequence[Any]) -> CanonKey:
        return canonical(self.funcs, self._pick(row))

    def to_target(self, key: Sequence[Any]) -> tuple[Any, ...]:
        return converted(self.target_writers, key)

    def to_target_in(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return converted(self.target_writers, self._pick(row))

    def to_source(self, key: Sequence[Any]) -> tuple[Any, ...]:
        return converted(self.source_writers, key)

    def to_source_in(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return converted(self.source_writers, self._pick(row))
