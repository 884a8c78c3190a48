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


def _click_classes() -> tuple[type, type]:
    """(ClickException, Abort) of the click typer uses (its own copy in recent typer, click in older ones)."""
    import typer

    base = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    return base, typer.Abort


_CLICK_ERROR, _ABORT = _click_classes()


def run_app(app: Callable[..., object]) -> None:
    """Run a typer app. The one place where errors become exit codes: LpgbError (bad input), a bad option
    value or usage (typer's ranges and choices) and OS errors (missing file, permissions, read-only or full
    disk) are one red line and exit code 2; Ctrl-C is 130; anything else is a bug: its traceback is kept,
    followed by one line saying to report it (exit 1)."""
    import typer

    set_offline()
    try:
        if isinstance(app, typer.Typer):  # typer words its usage errors in a box: here they are one line
            code = app(standalone_mode=False)
            if isinstance(code, int) and not isinstance(code, bool) and code:
                sys.exit(code)  # typer.Exit(n), e.g. 130 after Ctrl-C
        else:
            app()
    except SystemExit:
        raise
    except _CLICK_ERROR as exc:  # a bad option value (typer's ranges, choices) or usage
        if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments at all: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else ""
        error_line(LpgbError(f"{where}{exc.format_message()} (see --help)".replace("\n", " ")))
        sys.exit(2)
    except _ABORT:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
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


def positive_finite(value: float | None) -> float | None:
    """typer callback for a float option that must be a finite number > 0 (typer's `min=` cannot exclude 0
    and lets NaN through); None (option not given) passes."""
    import math

    import typer

    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value


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
