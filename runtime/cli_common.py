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


REPORT_BUGS = "this is a bug in lpgb: please report it with the traceback above"


def run_app(app: Callable[..., object]) -> None:
    """Run a typer app. The one place where errors become exit codes: LpgbError (bad input) and OS errors
    (missing file, permissions, read-only or full disk) are one red line and exit code 2; Ctrl-C is 130;
    anything else is a bug: its traceback is kept, followed by one line saying to report it (exit 1)."""
    set_offline()
    try:
        app()
    except SystemExit:
        raise
    except LpgbError as exc:
        error_line(exc)
        sys.exit(2)
    except OSError as exc:  # FileNotFoundError, PermissionError, EROFS, ENOSPC, ...
        error_line(exc)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception:  # noqa: BLE001 - a real bug: keep the traceback, then say where it goes
        import traceback

        traceback.print_exc()
        console.print(f"[bold red]error:[/] {REPORT_BUGS}", highlight=False)
        sys.exit(1)


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
