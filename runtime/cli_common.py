"""Shared CLI plumbing: one-line errors with non-zero exit, offline hub settings, rich console."""

from __future__ import annotations

import os
import sys
from typing import Callable

from rich.console import Console

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
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


def not_built_yet(stage: str) -> None:
    raise LpgbError(f"{stage} is not built yet")
