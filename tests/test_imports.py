"""The runtime is the torch-free ground floor: importing it (and its CLI) must not load torch."""

import subprocess
import sys

RUNTIME_MODULES = [
    "lpgb.runtime", "lpgb.runtime.config", "lpgb.runtime.cli", "lpgb.runtime.data_cli",
    "lpgb.runtime.geometry", "lpgb.runtime.tubes", "lpgb.runtime.video", "lpgb.runtime.datasets",
    "lpgb.runtime.metrics", "lpgb.runtime.scoring", "lpgb.runtime.pipeline", "lpgb.runtime.backends.base",
    "lpgb.runtime.backends.ort_backend", "lpgb.runtime.sidecar", "lpgb.runtime.outputs", "lpgb.runtime.boxfiles",
]


def test_runtime_imports_no_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {RUNTIME_MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'torchvision', 'open_clip'))\n"
        "print(bad[:5]); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
