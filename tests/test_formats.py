"""The one table of model formats (`lpgb.runtime.formats`): export, model.json roles, backends and bench rows
read it; these tests hold the readers to it."""

from __future__ import annotations

import dataclasses

import pytest

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.formats import FORMATS, INT8_PARTS, format_row, resolve, selected_formats, served_format
from lpgb.runtime.parts import PARTS


def test_every_build_and_gate_reference_resolves():
    pytest.importorskip("torch")
    for row in FORMATS.values():
        for reference in (row.build, row.gate):
            if reference is not None:
                assert callable(resolve(reference)), (row.name, reference)


def test_flags_are_export_request_fields_and_cli_options():
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from lpgb.export.cli import app
    from lpgb.export.pipeline import ExportRequest

    fields = {f.name for f in dataclasses.fields(ExportRequest)}
    help_text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    flagged = [row for row in FORMATS.values() if row.flag is not None]
    assert [row.flag for row in flagged] == ["fp16", "int8", "trt"]
    for row in flagged:
        assert row.flag in fields and f"--{row.flag}" in help_text
    request = ExportRequest(run=".", fp16=True, trt=True)
    assert [row.name for row in request.formats] == ["onnx", "fp16", "engine"]
    assert [row.name for row in selected_formats(object())] == ["onnx"]  # a missing flag counts as false


def test_rows_say_which_file_a_backend_opens():
    assert served_format("onnx", "fp16").name == "fp16"
    assert served_format("onnx", "fp16", "rpn").name == "onnx"  # the RPN serves in FP32
    assert [served_format("onnx", "int8", p).name for p in PARTS] == ["onnx", "int8", "int8", "onnx"]
    assert served_format("engine", "fp16", "smm").file_of("smm") == "smm.engine"
    assert INT8_PARTS == FORMATS["int8"].parts
    with pytest.raises(LpgbError, match="unknown precision 'int4'"):
        served_format("onnx", "int4")
    with pytest.raises(LpgbError, match="unknown model format"):
        format_row("tflite")


def test_model_json_roles_and_export_names_come_from_the_table():
    from lpgb.runtime.sidecar import part_roles, served_names

    assert set(part_roles()) == {"rpn", "branch1", "branch2", "smm", "branch1_fp16", "branch2_fp16", "smm_fp16",
                                 "branch1_int8", "branch2_int8", "rpn_engine", "branch1_engine", "branch2_engine",
                                 "smm_engine"}
    assert served_names()["branch2_int8.onnx"] == "branch2_int8" and "rpn_fp16.onnx" not in served_names()
    pytest.importorskip("torch")
    from lpgb.export.pipeline import export_names

    assert set(served_names()) - {"terms.npz"} <= set(export_names())


def test_bench_rows_are_backend_format_pairs():
    from lpgb.benchmarks.speed import bench_specs
    from lpgb.runtime.backends.base import backends

    specs = bench_specs()
    assert {"ort", "ort-fp16", "ort-int8", "openvino", "openvino-fp16", "trt"} <= set(specs)
    assert (specs["ort-int8"].backend, specs["ort-int8"].precision, specs["ort-int8"].format) == ("ort", "int8", "int8")
    assert specs["trt"].format == "engine" and "trt-fp16" not in specs  # the engines fix their precision
    if "torch" in backends():
        assert specs["torch"].format == "weights" and "torch-fp16" not in specs
    for entry in backends().values():
        assert all(name in FORMATS for name in entry.formats), entry.name


def test_a_backend_naming_an_unknown_format_is_refused():
    from lpgb.runtime.backends.base import BackendEntry, register_backend

    with pytest.raises(LpgbError, match="unknown model format 'tflite'"):
        register_backend(BackendEntry("bad", lambda *a, **k: None, "export", ("cpu",), ("fp32",), ("tflite",), ""))
