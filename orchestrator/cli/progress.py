"""A rich observer of executor events: one line per step and a progress bar per copy (stderr)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from orchestrator.cli.console import err
from orchestrator.events import (
    CompensationStarted,
    CopyProgress,
    Event,
    Notice,
    RunFinished,
    RunStarted,
    StepFailed,
    StepFinished,
    StepStarted,
)


class ProgressObserver:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.total = 0
        self.done = 0
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, RunStarted):
            self.total = len(event.steps)
            err.print(
                f"[bold]{event.kind}[/] run {event.run_id} on env {event.env}: {self.total} step(s)", highlight=False
            )
        elif isinstance(event, StepStarted):
            if event.kind in ("copy", "revert_copy"):
                self._start_bar(event.node)
        elif isinstance(event, CopyProgress):
            self._update_bar(event)
        elif isinstance(event, StepFinished):
            self._stop_bar(event.node)
            self.done += 1
            extra = f"  {event.detail}" if event.detail else ""
            verb = {"upgrade": "applied", "downgrade": "undone", "copy": "copied", "revert_copy": "reverted"}.get(
                event.kind, event.kind
            )
            err.print(f"  [green]✓[/] {event.node} {verb} in {event.seconds:.2f}s{extra}", highlight=False)
        elif isinstance(event, StepFailed):
            self._stop_bar(event.node)
            err.print(f"  [red]✗[/] {event.node} failed: {event.error}", highlight=False)
            for stmt in event.statements:
                err.print(f"      may remain: {stmt}", highlight=False)
        elif isinstance(event, CompensationStarted):
            err.print(f"[yellow]rolling back[/] {len(event.steps)} step(s) this run applied, newest first")
        elif isinstance(event, Notice):
            err.print(f"[dim]{event.message}[/]", highlight=False)
        elif isinstance(event, RunFinished):
            self._close()

    def _start_bar(self, node: str) -> None:
        if not err.is_terminal:
            return  # a live bar only makes sense on a terminal; logs get the step's summary line
        if self.progress is None:
            self.progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.progress.start()
        self.tasks[node] = self.progress.add_task(node, total=None, rate="", counts="")

    def _update_bar(self, event: CopyProgress) -> None:
        if self.progress is None or event.node not in self.tasks:
            self._start_bar(event.node)
        if self.progress is None:
            return
        task = self.tasks[event.node]
        speed: Any = self.progress.tasks[task].speed if task < len(self.progress.tasks) else None
        rate = f"{speed:,.0f} rows/s" if speed else ""
        counts = f"{event.rows:,}/{event.total:,} rows" if event.total is not None else f"{event.rows:,} rows"
        self.progress.update(task, completed=event.rows, total=event.total, rate=rate, counts=counts)

    def _stop_bar(self, node: str) -> None:
        if self.progress is not None and node in self.tasks:
            self.progress.remove_task(self.tasks.pop(node))
            if not self.tasks:
                self._close()

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks.clear()
