"""Running the installed CLIs in tests: one subprocess helper and the one-line-error assertion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _cli(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, contains: str = "") -> str:
    """Exit code 2, no traceback, exactly one non-blank stderr line starting with "error:" containing `contains`."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, f"exit {r.returncode}; stderr: {r.stderr[-2000:]}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("error:"), lines[0]
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]
