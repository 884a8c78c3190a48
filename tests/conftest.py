"""Shared fixtures: paths to shared data, a small synthetic dataset built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parents[1]
PED2 = Path(os.environ.get("LPGB_PED2", REPO.parent / "shared" / "data" / "ped2"))


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    if not (PED2 / "training").is_dir():
        pytest.skip(f"UCSD Ped2 not found at {PED2} (set LPGB_PED2)")
    return PED2
