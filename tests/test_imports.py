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


def _imported_names(path) -> set[str]:
    """Every module a source file names in an import statement or an `importlib.import_module("...")` call."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names.add(str(node.args[0].value))
    return names


def test_runtime_source_names_no_trainer_module():
    """The runtime is below the trainer: no module under runtime/ imports lpgb.trainer, even lazily (the torch
    backend registers itself through the `lpgb.backends` entry point group)."""
    from pathlib import Path

    root = Path(lpgb.runtime.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) >= len(RUNTIME_MODULES) - 3  # the walk sees the subpackages
    bad = {str(f.relative_to(root)): sorted(n for n in _imported_names(f) if n.split(".")[:2] == ["lpgb", "trainer"])
           for f in files}
    assert not {f: n for f, n in bad.items() if n}


def test_torch_backend_row_comes_from_its_entry_point(tmp_path):
    from lpgb.runtime.backends.base import ENTRY_POINT_GROUP, backends

    entry = backends()["torch"]
    assert entry.factory.__module__ == "lpgb.trainer.torch_entry" and entry.reads == "run"
    from importlib.metadata import entry_points

    assert [p.value for p in entry_points(group=ENTRY_POINT_GROUP) if p.name == "torch"] == [
        "lpgb.trainer.torch_entry:ENTRY"]
    # without the train extras the row is still listed and opening it says in one line what to install
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from lpgb.runtime.backends.base import load_backend\n"
        "from lpgb.runtime.errors import LpgbError\n"
        f"try: load_backend('torch', {str(tmp_path)!r})\n"
        "except LpgbError as exc: print(exc); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "install lpgb[train]" in proc.stdout and proc.stdout.count("\n") == 1
