"""Rich rendering helpers shared by the commands."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from par_pipeline.errors import masked

console = Console()
err_console = Console(stderr=True)


def warn(message: str) -> None:
    """A warning that does not stop the command (an experiment tracker that failed), on stderr."""
    err_console.print(f"[yellow]warning:[/] {escape(masked(message))}", highlight=False, soft_wrap=True)


class RateColumn(TextColumn):
    """Items per second with the unit of the task (frames/s, samples/s, ...)."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text(f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s", style="progress.data.speed")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, unit: str) -> Iterator[Callable[..., None]]:
    """Yield `update(done, total=None)` that moves a bar with rate and ETA to an absolute position."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                  console=console, transient=False) as progress:
        # shown from the first update on: a command refused at once prints its error, not an empty bar
        task = progress.add_task(description, total=total, unit=unit, visible=False)

        def update(done: int, total: int | None = None) -> None:
            if total is not None:
                progress.update(task, total=total)
            progress.update(task, completed=done, visible=True)
        yield update


def kv_table(title: str, rows: list[tuple[str, object]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, str(v))
    return t
