"""Shared CLI plumbing: one-line errors with non-zero exit, offline hub settings, rich console."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from rich.console import Console
from rich.markup import escape

from lpgb.runtime.errors import LpgbError

console = Console(stderr=True)

# Nothing in lpgb may download weights or data at run time.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def set_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def run_app(app: Callable[..., object]) -> None:
    """Run a typer app; LpgbError and common IO errors become one red line and exit code 2."""
    set_offline()
    try:
        app()
    except SystemExit:
        raise
    except LpgbError as exc:
        error_line(exc)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        error_line(exc)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


def error_line(exc: BaseException) -> None:
    """One red `error:` line; the message is printed literally (install hints keep their `[extras]`)."""
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse for the diagnostics: a usage error is an LpgbError (one line, exit 2 under run_diagnostic)."""

    def error(self, message: str):  # type: ignore[override]
        raise LpgbError(f"{self.prog}: {message} (see --help)")


def run_diagnostic(main: Callable[[], object]) -> None:
    """Entry point of a `python -m lpgb.benchmarks.<diagnostic>` command: like `run_app`, so bad input
    is one line and exit code 2 (argparse usage errors exit 2 as well)."""
    run_app(main)
