"""The first bound pass of a run must not import sympy: torch.broadcast_shapes and
autograd.grad with grad_outputs import torch's symbolic-shapes module (and sympy with it),
~0.9 s inside the deadline of every run (a 1 s campaign case answered 1.8 s late)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys
from verifier.config import VerifyConfig
from verifier.pipeline import verify
result = verify(sys.argv[1], sys.argv[2], VerifyConfig(timeout=30))
print(result.verdict, "sympy" in sys.modules)
"""


def _sin_mlp(path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b0"),
             numpy_helper.from_array(rng.normal(size=(2, 8)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b1")]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1),
             helper.make_node("Sin", ["h"], ["s"]),
             helper.make_node("Gemm", ["s", "w1", "b1"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "sin_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.save(proto, path)


def test_verifying_a_smooth_net_does_not_import_sympy(tmp_path):
    model, spec = tmp_path / "sin.onnx", tmp_path / "prop.vnnlib"
    _sin_mlp(model)
    spec.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(3))
                    + "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                    + "".join(f"(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n"
                              for i in range(3))
                    + "(assert (>= Y_0 1000.0))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE, str(model), str(spec)], env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["unsat", "False"], out.stdout + out.stderr
