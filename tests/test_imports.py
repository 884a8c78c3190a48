"""The runtime is the torch-free ground floor: importing it (and its CLI) must not load torch."""

import pkgutil
import subprocess
import sys

import lpgb.runtime

# every module of the runtime, discovered (a new module is covered without editing this list);
# backends whose own library may be absent (TensorRT, OpenVINO) import it lazily, so they import here too
RUNTIME_MODULES = ["lpgb.runtime"] + sorted(
    m.name for m in pkgutil.walk_packages(lpgb.runtime.__path__, prefix="lpgb.runtime."))


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


def test_runtime_module_discovery_sees_the_subpackages():
    assert {"lpgb.runtime.terms.velocity", "lpgb.runtime.backends.ort_backend", "lpgb.runtime.bundle"} <= set(
        RUNTIME_MODULES)
