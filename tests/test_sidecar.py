"""model.json: round trip and each refusal with a one-line message (torch-free)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.sidecar import (
    SIDECAR_NAME, PartInfo, Preprocessing, Sidecar, TensorSpec, load_sidecar, lpgb_version, sha256_file,
    write_sidecar,
)


def _export_folder(tmp_path, with_engine=False, cc=(8, 6)):
    cfg = preset("tiny")
    parts = {}
    for name in ("rpn", "branch1", "branch2", "smm"):
        (tmp_path / f"{name}.onnx").write_bytes(f"fake {name} graph".encode())
        parts[name] = PartInfo(
            file=f"{name}.onnx",
            inputs=[TensorSpec("crops", ["batch", 3, 64, 64], "float32")],
            outputs=[TensorSpec("features", ["batch", 4, 32], "float32")],
            precision="fp32", opset=17, sha256=sha256_file(tmp_path / f"{name}.onnx"))
    if with_engine:
        (tmp_path / "branch1.engine").write_bytes(b"plan")
        parts["branch1_engine"] = replace(parts["branch1"], file="branch1.engine", precision="fp16",
                                          sha256=sha256_file(tmp_path / "branch1.engine"), build="strongly_typed")
    sidecar = Sidecar(config=cfg.to_dict(), preprocessing=Preprocessing.from_config(cfg), parts=parts,
                      calibration={"frame_score_mean": 0.1, "frame_score_q995": 0.4},
                      compute_capability=cc if with_engine else None,
                      versions={"onnx": "1.23.2", "tensorrt": "10.13.0"})
    write_sidecar(tmp_path, sidecar)
    return sidecar


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_round_trip(tmp_path):
    written = _export_folder(tmp_path, with_engine=True)
    loaded = load_sidecar(tmp_path, expect_engine_cc=(8, 6), expect_trt_version="10.13.0")
    assert loaded == written
    assert loaded.lpgb_config == preset("tiny")
    assert loaded.preprocessing.crop_size == 64 and loaded.preprocessing.rpn_input_size == (160, 240)
    assert loaded.parts["branch1_engine"].is_engine and not loaded.parts["branch1"].is_engine
    assert loaded.lpgb_version == lpgb_version()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temp left


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    (tmp_path / "x").write_bytes(b"a" * 3_000_000)
    assert sha256_file(tmp_path / "x", chunk=1 << 16) == hashlib.sha256(b"a" * 3_000_000).hexdigest()


def test_refuses_folder_without_sidecar(tmp_path):
    with pytest.raises(LpgbError) as exc:
        load_sidecar(tmp_path)
    assert _one_line(exc).startswith("not an lpgb export folder: no model.json")


def test_refuses_invalid_json(tmp_path):
    (tmp_path / SIDECAR_NAME).write_text("{not json")
    with pytest.raises(LpgbError, match="is not valid JSON") as exc:
        load_sidecar(tmp_path)
    _one_line(exc)


def test_refuses_other_major_version(tmp_path):
    _export_folder(tmp_path)
    data = json.loads((tmp_path / SIDECAR_NAME).read_text())
    data["lpgb_version"] = f"{int(lpgb_version().split('.')[0]) + 1}.0.0"
    (tmp_path / SIDECAR_NAME).write_text(json.dumps(data))
    with pytest.raises(LpgbError, match=r"was written by lpgb .*re-export") as exc:
        load_sidecar(tmp_path)
    _one_line(exc)


def test_refuses_malformed_and_bad_config(tmp_path):
    _export_folder(tmp_path)
    data = json.loads((tmp_path / SIDECAR_NAME).read_text())
    del data["parts"]["rpn"]["sha256"]
    (tmp_path / SIDECAR_NAME).write_text(json.dumps(data))
    with pytest.raises(LpgbError, match="is malformed") as exc:
        load_sidecar(tmp_path)
    _one_line(exc)

    _export_folder(tmp_path)
    data = json.loads((tmp_path / SIDECAR_NAME).read_text())
    data["config"]["spatial"]["bogus"] = 1
    (tmp_path / SIDECAR_NAME).write_text(json.dumps(data))
    with pytest.raises(LpgbError, match="unknown key") as exc:
        load_sidecar(tmp_path)
    _one_line(exc)


def test_refuses_missing_part(tmp_path):
    _export_folder(tmp_path)
    (tmp_path / "smm.onnx").unlink()
    with pytest.raises(LpgbError, match=r"smm.onnx \(part 'smm'\) is missing") as exc:
        load_sidecar(tmp_path)
    _one_line(exc)


def test_refuses_changed_part(tmp_path):
    _export_folder(tmp_path)
    (tmp_path / "branch1.onnx").write_bytes(b"retrained")
    with pytest.raises(LpgbError) as exc:
        load_sidecar(tmp_path)
    assert _one_line(exc).startswith("branch1.onnx changed since export (sha256 mismatch)")
    load_sidecar(tmp_path, verify_hashes=False)  # opt-out for quick listing


def test_refuses_engine_for_other_gpu_or_tensorrt(tmp_path):
    _export_folder(tmp_path, with_engine=True, cc=(8, 6))
    load_sidecar(tmp_path)  # no GPU expectation given: nothing to compare
    with pytest.raises(LpgbError, match=r"built for GPU compute capability 8\.6 but this GPU is 9\.0") as exc:
        load_sidecar(tmp_path, expect_engine_cc=(9, 0))
    _one_line(exc)
    with pytest.raises(LpgbError, match=r"built with TensorRT 10\.13\.0 but TensorRT 10\.8\.0") as exc:
        load_sidecar(tmp_path, expect_trt_version="10.8.0")
    _one_line(exc)


def test_onnx_only_export_ignores_gpu_expectation(tmp_path):
    """The same GPU expectations that refuse an engine built elsewhere leave ONNX-only exports alone."""
    onnx_only, with_engine = tmp_path / "onnx", tmp_path / "engine"
    onnx_only.mkdir(), with_engine.mkdir()
    written = _export_folder(onnx_only, with_engine=False)
    _export_folder(with_engine, with_engine=True, cc=(8, 6))
    loaded = load_sidecar(onnx_only, expect_engine_cc=(9, 0), expect_trt_version="10.8.0")
    assert loaded == written and not any(p.is_engine for p in loaded.parts.values())
    with pytest.raises(LpgbError, match="compute capability 8.6 but this GPU is 9.0"):
        load_sidecar(with_engine, expect_engine_cc=(9, 0), expect_trt_version="10.8.0")


def test_bundle_refuses_engines_for_another_gpu_or_tensorrt(tmp_path, monkeypatch):
    """`ModelBundle.open(..., "trt")` checks the engines against this machine before anything loads."""
    from lpgb.runtime import bundle
    from lpgb.runtime.bundle import ModelBundle

    _export_folder(tmp_path, with_engine=True, cc=(8, 6))
    monkeypatch.setattr(bundle, "installed_tensorrt_version", lambda: "10.13.0")
    monkeypatch.setattr(bundle, "local_gpu_compute_capability", lambda: (9, 0))
    with pytest.raises(LpgbError, match=r"compute capability 8\.6 but this GPU is 9\.0") as exc:
        ModelBundle.open(tmp_path, "trt")
    _one_line(exc)
    monkeypatch.setattr(bundle, "local_gpu_compute_capability", lambda: (8, 6))
    monkeypatch.setattr(bundle, "installed_tensorrt_version", lambda: "10.8.0")
    with pytest.raises(LpgbError, match=r"built with TensorRT 10\.13\.0 but TensorRT 10\.8\.0"):
        ModelBundle.open(tmp_path, "trt")
    monkeypatch.setattr(bundle, "installed_tensorrt_version", lambda: None)
    with pytest.raises(LpgbError, match="TensorRT is not installed"):
        ModelBundle.open(tmp_path, "trt")


# --- the folder is the contract: every served file listed under its role, inside the folder --------------


def _write_terms(folder, sidecar):
    """terms.npz beside the parts, listed in `files` as lpgb-export lists it."""
    import numpy as np

    np.savez(folder / "terms.npz", **{"velocity/mean": np.zeros(2)})
    listed = replace(sidecar, files={"terms.npz": sha256_file(folder / "terms.npz")})
    write_sidecar(folder, listed)
    return listed


@pytest.mark.parametrize("entry", ["branch2", "files"])
def test_file_without_its_entry_is_refused(tmp_path, entry):
    """A deleted entry (a part's, or terms.npz's in `files`) no longer lets the file be served unverified."""
    sidecar = _write_terms(tmp_path, _export_folder(tmp_path))
    load_sidecar(tmp_path)
    if entry == "files":
        write_sidecar(tmp_path, replace(sidecar, files={}))
        name = "terms.npz"
    else:
        write_sidecar(tmp_path, replace(sidecar, parts={k: v for k, v in sidecar.parts.items() if k != entry}))
        name = "branch2.onnx"
    with pytest.raises(LpgbError) as exc:
        load_sidecar(tmp_path)
    assert _one_line(exc).startswith(f"{name} in {tmp_path} is not listed in model.json")


def test_entry_without_its_file_is_refused(tmp_path):
    _write_terms(tmp_path, _export_folder(tmp_path))
    (tmp_path / "terms.npz").unlink()
    with pytest.raises(LpgbError) as exc:
        load_sidecar(tmp_path)
    assert _one_line(exc).startswith("terms.npz (fitted score-term states) is missing from")


def test_swapped_parts_are_refused_by_their_role_hash(tmp_path):
    """branch1.onnx and branch2.onnx exchanged on disk: both files are known, but not in those roles."""
    _export_folder(tmp_path)
    one, two = (tmp_path / "branch1.onnx").read_bytes(), (tmp_path / "branch2.onnx").read_bytes()
    (tmp_path / "branch1.onnx").write_bytes(two)
    (tmp_path / "branch2.onnx").write_bytes(one)
    with pytest.raises(LpgbError) as exc:
        load_sidecar(tmp_path)
    assert _one_line(exc) == ("branch1.onnx changed since export (sha256 mismatch) for part 'branch1': "
                              "re-export or restore it")


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/hostname", "sub/../../outside.onnx", "~/x.onnx"])
def test_listed_path_must_stay_inside_the_folder(tmp_path, name):
    folder = tmp_path / "export"
    folder.mkdir()
    (tmp_path / "outside.onnx").write_bytes(b"fake rpn graph")
    sidecar = _export_folder(folder)
    rpn = replace(sidecar.parts["rpn"], file=name, sha256=sha256_file(tmp_path / "outside.onnx"))
    write_sidecar(folder, replace(sidecar, parts={**sidecar.parts, "rpn": rpn}))
    (folder / "rpn.onnx").unlink()
    with pytest.raises(LpgbError) as exc:
        load_sidecar(folder)
    assert "files must be named relative to the model folder, inside it" in _one_line(exc)


def test_link_leaving_the_folder_is_refused(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    _export_folder(folder)
    outside = tmp_path / "branch1.onnx"
    outside.write_bytes((folder / "branch1.onnx").read_bytes())  # same bytes: the hash alone would pass
    (folder / "branch1.onnx").unlink()
    (folder / "branch1.onnx").symlink_to(outside)
    with pytest.raises(LpgbError) as exc:
        load_sidecar(folder)
    assert "is a link leading outside" in _one_line(exc)
    (folder / "branch1.onnx").unlink()
    (folder / "b1.onnx").write_bytes(outside.read_bytes())
    (folder / "branch1.onnx").symlink_to("b1.onnx")  # a link that stays inside is the listed file itself
    load_sidecar(folder)


def test_unknown_role_is_refused(tmp_path):
    sidecar = _export_folder(tmp_path)
    write_sidecar(tmp_path, replace(sidecar, parts={**sidecar.parts, "head": sidecar.parts["rpn"]}))
    with pytest.raises(LpgbError) as exc:
        load_sidecar(tmp_path)
    assert "lists a part 'head' that lpgb does not serve" in _one_line(exc)
    write_sidecar(tmp_path, replace(sidecar, files={"notes.txt": "0" * 64}))
    with pytest.raises(LpgbError, match="lists a file 'notes.txt' that lpgb does not serve"):
        load_sidecar(tmp_path)


def test_backends_open_the_listed_paths(tmp_path):
    """Backends get their files from model.json (each role's `file`), not from fixed names."""
    from lpgb.runtime.backends.base import part_files

    sidecar = _export_folder(tmp_path)
    (tmp_path / "nets").mkdir()
    (tmp_path / "branch1.onnx").rename(tmp_path / "nets" / "first.onnx")
    moved = replace(sidecar.parts["branch1"], file="nets/first.onnx")
    write_sidecar(tmp_path, replace(sidecar, parts={**sidecar.parts, "branch1": moved}))
    files = part_files(tmp_path, "onnx")
    assert files["branch1"] == tmp_path / "nets" / "first.onnx"
    assert files["branch2"] == tmp_path / "branch2.onnx" and set(files) == {"rpn", "branch1", "branch2", "smm"}
