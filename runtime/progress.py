"""Rich progress bars shared by every long-running command (quiet when not a terminal or in CI)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lpgb.runtime.cli_common import console


@contextlib.contextmanager
def progress_bar() -> Iterator[Progress]:
    """A Progress with description, bar, count, elapsed and remaining time, plus a free-text field."""
    columns = (
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress
