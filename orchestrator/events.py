"""Typed events the executor emits. Progress bars, JSON reporters and tests observe them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RunStarted:
    run_id: str
    env: str
    kind: str  # "apply" | "rollback"
    steps: tuple[str, ...]


@dataclass(frozen=True)
class StepStarted:
    run_id: str
    node: str
    kind: str


@dataclass(frozen=True)
class StepFinished:
    run_id: str
    node: str
    kind: str
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class StepFailed:
    run_id: str
    node: str
    kind: str
    error: str
    statements: tuple[str, ...] = ()  # what may have run, on a database without transactional DDL


@dataclass(frozen=True)
class CopyProgress:
    run_id: str
    node: str
    rows: int
    total: int | None


@dataclass(frozen=True)
class CompensationStarted:
    run_id: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Notice:
    run_id: str
    message: str


@dataclass(frozen=True)
class RunFinished:
    run_id: str
    outcome: str


Event = RunStarted | StepStarted | StepFinished | StepFailed | CopyProgress | CompensationStarted | Notice | RunFinished
Observer = Callable[[Event], None]


def no_observer(_event: Event) -> None:
    return None
