"""`python -m lpgb.benchmarks.parts tiny edge paper`: export each preset's parts (fresh weights)
to ONNX and report file size and ONNX Runtime CPU latency at batch 1 and a typical batch.

Proves every preset exports and parity-checks (PyTorch vs ORT FP32), independent of training.
Latency = median of `repeats` runs after one warm-up.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lpgb.export.onnx_export import export_onnx, verify_onnx
from lpgb.export.pipeline import dynamic_axes, example_inputs
from lpgb.runtime.backends.ort_backend import cpu_session
from lpgb.runtime.config import preset
from lpgb.trainer.models.branch import Branch
from lpgb.trainer.models.rpn import ProposalNet
from lpgb.trainer.models.temporal import TemporalModel
from lpgb.trainer.torch_backend import PART_IO

TYPICAL_TUBES = 4


def part_modules(name: str) -> dict[str, torch.nn.Module]:
    cfg = preset(name)
    torch.manual_seed(0)
    return {"rpn": ProposalNet(cfg.proposals).eval(), "branch1": Branch(cfg.spatial).eval(),
            "smm": TemporalModel(cfg).eval().for_export()}


def measure(name: str, repeats: int = 5) -> list[dict]:
    cfg = preset(name)
    t = cfg.smm.window + 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for part, module in part_modules(name).items():
            ins, outs = PART_IO[part]
            path = export_onnx(module, example_inputs(part, cfg), Path(tmp) / f"{part}.onnx", list(ins), list(outs),
                               dynamic_axes(part), 17)
            parity = verify_onnx(module, path, example_inputs(part, cfg), rtol=1e-4, order_insensitive=part == "rpn")
            session = cpu_session(path)
            batches = [1] if part == "rpn" else [1, TYPICAL_TUBES * t if part.startswith("branch") else TYPICAL_TUBES]
            for batch in batches:
                feeds = {n: x.numpy() for n, x in zip(ins, example_inputs(part, cfg, batch=batch))}
                session.run(None, feeds)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    session.run(None, feeds)
                    times.append(time.perf_counter() - start)
                rows.append({"preset": name, "part": part, "mb": path.stat().st_size / 2**20, "batch": batch,
                             "ms": 1e3 * float(np.median(times)), "max_rel": parity.max_rel})
    return rows


def main(argv: list[str]) -> None:
    names = argv or ["tiny", "edge", "paper"]
    print("| preset | part | ONNX MB | batch | ORT CPU ms (median) | torch vs ORT max rel |")
    print("|---|---|---|---|---|---|")
    for name in names:
        for r in measure(name):
            print(f"| {r['preset']} | {r['part']} | {r['mb']:.1f} | {r['batch']} | {r['ms']:.1f} | {r['max_rel']:.1e} |",
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
