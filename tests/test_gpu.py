"""The engines and the pipeline on a CUDA device: bounds computed there enclose points sampled
in their boxes (evaluated on the CPU), match the CPU's CROWN bounds, and ``verify`` answers
what it answers on the CPU. Marked ``gpu`` (deselected by default): run with
``python -m pytest -m gpu tests/test_gpu.py`` on a machine with a CUDA device."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from bounds.engine.forward import run_graph
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.bounds.nets import random_mlp
from tests.bounds.structured_nets import maxpool_cnn
from tests.onnx_builders import gemm_relu_mlp
from verifier.config import VerifyConfig
from verifier.pipeline import verify

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

F64 = torch.float64
GRAPHS = {"mlp": lambda: random_mlp([6, 32, 32, 32, 4], seed=3),
          "cnn": lambda: maxpool_cnn(5, deep=True)}


def _problem(graph, seed: int):
    """A box around a random centre and two spec rows (output 0 minus outputs 1 and 2)."""
    gen = torch.Generator().manual_seed(seed)
    shape = graph.inputs[0].shape
    centre = torch.randn(shape, generator=gen, dtype=F64)
    box = Interval(centre - 0.3, centre + 0.3)
    n_out = graph.outputs[0].shape[-1]
    coef = torch.zeros((1, 2, n_out), dtype=F64)
    coef[0, :, 0] = 1.0
    coef[0, 0, 1] = coef[0, 1, 2] = -1.0
    return box, coef, torch.zeros((1, 2), dtype=F64)


def _on(device, box: Interval, coef, rhs):
    return Interval(box.lower.to(device), box.upper.to(device)), coef.to(device), rhs.to(device)


def _sampled_margins(graph, box: Interval, coef, n: int = 2000) -> torch.Tensor:
    """coef @ graph(x) at points of the box (corners among them), on the CPU."""
    gen = torch.Generator().manual_seed(11)
    t = torch.rand((n, *box.lower.shape[1:]), generator=gen, dtype=F64)
    t[: n // 4] = t[: n // 4].round()
    x = box.lower + (box.upper - box.lower) * t
    y = run_graph(graph, x)[0].reshape(n, -1)
    return y @ coef[0].T


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha"])
def test_cuda_bounds_enclose_samples(name, method):
    graph = GRAPHS[name]()
    box, coef, rhs = _problem(graph, seed=1)
    got = bound_spec(graph, *_on("cuda", box, coef, rhs), BoundOptions(method=method))
    lower = got.lower.cpu()
    assert got.lower.device.type == "cuda"
    margins = _sampled_margins(graph, box, coef)
    assert bool((margins >= lower - 1e-9).all()), (margins.min(0).values, lower)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_cuda_crown_matches_cpu(name):
    """Same float64 arithmetic up to summation order: the bounds agree to 1e-9 relative."""
    graph = GRAPHS[name]()
    box, coef, rhs = _problem(graph, seed=2)
    cpu = bound_spec(graph, box, coef, rhs, BoundOptions(method="crown")).lower
    gpu = bound_spec(graph, *_on("cuda", box, coef, rhs), BoundOptions(method="crown"))
    assert torch.allclose(gpu.lower.cpu(), cpu, rtol=1e-9, atol=1e-9), (gpu.lower, cpu)


def _random_layers(sizes: list[int], seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(o, i)) / np.sqrt(i), rng.normal(size=o) * 0.1)
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)]


def _model_and_specs(tmp_path):
    model = tmp_path / "mlp.onnx"
    onnx.save(gemm_relu_mlp(_random_layers([3, 24, 24, 2], seed=4)), model)
    return model


def _spec(tmp_path, name: str, threshold: float):
    """Unsafe: Y_0 - Y_1 >= threshold on [-1, 1]^3."""
    lines = [f"(declare-const X_{i} Real)" for i in range(3)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(2)]
    lines += [f"(assert (>= X_{i} -1.0))\n(assert (<= X_{i} 1.0))" for i in range(3)]
    lines.append(f"(assert (>= Y_0 (+ Y_1 {threshold!r})))")
    path = tmp_path / f"{name}.vnnlib"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("method", ["auto", "bab", "incomplete", "milp"])
@pytest.mark.parametrize("threshold", [-0.5, 0.0, 2.0, 10.0])
def test_verify_on_cuda_answers_as_on_cpu(tmp_path, threshold, method):
    """Every method end to end (attacks, input and ReLU splits, MILP with the device's
    bounds): the answer on the device is the CPU's."""
    model = _model_and_specs(tmp_path)
    spec = _spec(tmp_path, "p", threshold)
    answers = {device: verify(str(model), str(spec),
                              VerifyConfig(timeout=60.0, device=device, method=method))
               for device in ("cpu", "cuda")}
    assert answers["cuda"].verdict == answers["cpu"].verdict, answers
    if method != "incomplete":
        assert answers["cuda"].verdict in ("sat", "unsat"), answers


@pytest.mark.parametrize("activation", ["Sigmoid", "Relu"])
def test_branch_and_bound_on_cuda_over_an_image_box(tmp_path, activation):
    """A 64-input MLP (no input splitting): the neuron-split search and its attacks on the
    device, against the CPU's answer, for a threshold near the network's top on the box."""
    proto = gemm_relu_mlp(_random_layers([64, 32, 32, 2], seed=9))
    for node in proto.graph.node:
        if node.op_type == "Relu":
            node.op_type = activation
    model = tmp_path / "mlp64.onnx"
    onnx.save(proto, model)
    lines = [f"(declare-const X_{i} Real)" for i in range(64)]
    lines += [f"(declare-const Y_{i} Real)" for i in range(2)]
    lines += [f"(assert (>= X_{i} -0.2))\n(assert (<= X_{i} 0.2))" for i in range(64)]
    answers = {}
    for threshold in (0.0, 0.4, 1.5):
        spec = tmp_path / f"p{threshold}.vnnlib"
        spec.write_text("\n".join(lines + [f"(assert (>= Y_0 (+ Y_1 {threshold!r})))"]) + "\n")
        for device in ("cpu", "cuda"):
            got = verify(str(model), str(spec), VerifyConfig(timeout=60.0, device=device,
                                                             method="bab"))
            answers[threshold, device] = got.verdict
        assert answers[threshold, "cuda"] == answers[threshold, "cpu"], answers
