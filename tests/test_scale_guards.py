"""Memory safety, device choice and the first-bound-pass clock (issue 17, scale role):
a model that cannot fit answers ``unknown`` naming why, an allocation failure is an answer
and not a kill, ``--device auto`` keeps small models on the CPU, and every verification that
bounds reports when its first complete bound pass ended."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import verifier.memory_guard as memory_guard
import verifier.strategy as strategy
from bounds.graph import Graph, Node, TensorInfo
from tests.bounds.nets import random_mlp
from tests.bounds.structured_nets import maxpool_cnn
from verifier.config import AttackConfig, VerifyConfig
from verifier.device_choice import (
    GPU_MIN_CONV_MACS,
    GPU_MIN_MACS,
    choose_device,
    gpu_pays,
    pass_macs,
)
from verifier.pipeline import verify

N_IN, HIDDEN = 20, 8


def _model_and_spec(tmp_path) -> tuple[str, str]:
    """x[1, 20] in [-1, 1] -> Gemm -> Relu -> Gemm -> y[1, 1]; unsafe set y >= t with t above
    an interval bound of y, so the property holds and CROWN proves it."""
    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(0, 0.3, (HIDDEN, N_IN)), rng.normal(0, 0.1, HIDDEN)
    w2, b2 = rng.normal(0, 0.3, (1, HIDDEN)), np.zeros(1)
    upper_h = np.maximum(np.abs(w1).sum(1) + b1, 0)
    threshold = float((np.maximum(w2, 0) @ upper_h)[0] + b2[0]) + 1.0
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx_path, spec_path = tmp_path / "m.onnx", tmp_path / "p.vnnlib"
    onnx.save(model, onnx_path)
    lines = [f"(declare-const X_{i} Real)" for i in range(N_IN)] + ["(declare-const Y_0 Real)"]
    for i in range(N_IN):
        lines += [f"(assert (>= X_{i} -1.0))", f"(assert (<= X_{i} 1.0))"]
    lines.append(f"(assert (>= Y_0 {threshold!r}))")
    spec_path.write_text("\n".join(lines) + "\n")
    return str(onnx_path), str(spec_path)


def test_unsat_reports_its_first_bound_pass(tmp_path):
    onnx_path, spec_path = _model_and_spec(tmp_path)
    res = verify(onnx_path, spec_path, VerifyConfig(timeout=30))
    assert res.verdict == "unsat", res  # (failed once in CI, not reproduced: res says how)
    assert 0 < res.stats.get("first_bound_s", 0) <= res.time_s, res


def test_a_model_that_cannot_fit_answers_unknown_with_the_reason(tmp_path, monkeypatch):
    onnx_path, spec_path = _model_and_spec(tmp_path)
    monkeypatch.setattr(memory_guard, "free_bytes", lambda device: 1000)
    # No PGD rounds: the last attack ends on its own, well before the deadline (with them it
    # ran to the deadline, and under load its last piece overran a 3 s timeout's margin: the
    # watchdog then answered timeout).
    res = verify(onnx_path, spec_path, VerifyConfig(timeout=10, attack=AttackConfig(steps=0)))
    assert res.verdict == "unknown"
    assert "not bounded" in res.message and "GiB" in res.message
    # (the guided attack's own CROWN pass of the spec rows may still be the first pass)
    assert res.stats.get("first_bound_s", 0) <= res.time_s


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 88000000000 bytes"),
])
def test_an_allocation_failure_in_the_bounds_answers_unknown(tmp_path, monkeypatch, error):
    onnx_path, spec_path = _model_and_spec(tmp_path)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(strategy, "run_methods", fail)
    res = verify(onnx_path, spec_path, VerifyConfig(timeout=10))
    assert res.verdict == "unknown" and res.message.startswith("out of memory")


def test_other_runtime_errors_are_not_taken_for_memory():
    assert not memory_guard.is_out_of_memory(RuntimeError("shape '[2, 3]' is invalid"))
    assert not memory_guard.is_out_of_memory(ValueError("can't allocate memory"))


def _wide_cnn() -> Graph:
    """3x64x64 input, five 32-channel 3x3 convolutions with Relu: a large bound pass."""
    rng = np.random.default_rng(0)
    nodes, prev, c_in = [], "x", 3
    for i in range(5):
        w = rng.normal(size=(32, c_in, 3, 3)).astype(np.float32)
        attrs = {"strides": (1, 1), "dilations": (1, 1), "group": 1, "pads": (1, 1, 1, 1)}
        nodes.append(Node(f"c{i}", "Conv", (prev, None, None), (1, 32, 64, 64), attrs,
                          {1: w, 2: np.zeros(32, np.float32)}))
        nodes.append(Node(f"r{i}", "Relu", (f"c{i}",), (1, 32, 64, 64)))
        prev, c_in = f"r{i}", 32
    return Graph((TensorInfo("x", (1, 3, 64, 64)),), (TensorInfo(prev, (1, 32, 64, 64)),),
                 tuple(nodes))


def test_auto_device_keeps_small_models_on_the_cpu(monkeypatch):
    """The measured rule (verifier/device_choice.py): fully connected nets of the benchmarks'
    sizes and small CNNs stay on the CPU; CNNs from oval21's size up and any model past
    GPU_MIN_MACS go to the GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    acas_like = random_mlp([5, 50, 50, 50, 50, 50, 50, 5])
    assert not gpu_pays(acas_like, 10)
    assert choose_device("auto", acas_like, 10) == "cpu"
    mnistfc_like = random_mlp([784, 256, 256, 256, 256, 10])
    assert pass_macs(mnistfc_like, 9) > GPU_MIN_CONV_MACS  # large enough, were it a CNN
    assert choose_device("auto", mnistfc_like, 9) == "cpu"
    assert choose_device("auto", maxpool_cnn(0, deep=True), 3) == "cpu"  # a CNN, tiny
    wide_mlp = random_mlp([1024, 2048, 2048, 10])
    assert pass_macs(wide_mlp, 9) >= GPU_MIN_MACS
    assert choose_device("auto", wide_mlp, 9) == "cuda"
    assert gpu_pays(_wide_cnn(), 1)
    assert choose_device("auto", _wide_cnn(), 1) == "cuda"
    assert choose_device("auto", None, 1) == "cpu"  # not bounded: onnxruntime on the CPU
    assert choose_device("cpu", _wide_cnn(), 1) == "cpu"


def test_auto_device_without_a_gpu_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto", _wide_cnn(), 1) == "cpu"


def test_search_budgets_follow_the_process_cap(monkeypatch):
    """Batch sizes of the searches (verifier.bab.memory) and the engines' chunk budget see
    the memory the process may still take under its cap, not the machine's."""
    import bounds.engine.budget as budget
    from verifier.bab.memory import memory_budget

    monkeypatch.setattr(budget, "_rlimit_headroom", lambda: 1 << 20)
    monkeypatch.setattr(budget.heap, "retained_free_bytes", lambda: 0)  # test_heap.py's
    assert budget.free_bytes("cpu") == 1 << 20
    assert memory_budget(1 << 30, share=0.5) == 1 << 19
    expected = int(budget.PASS_MEMORY_SHARE * (1 << 20)) // (budget.COEF_COPIES * 8)
    assert budget.coef_budget("cpu", torch.float64, 1 << 24) == expected


def test_a_service_jobs_limit_bounds_the_engines_and_the_queue(monkeypatch):
    """A job's memory limit (set_host_limit, enforced on the resident set by the service's
    watchdog): free memory is the limit less the resident set, and a neuron-split search's
    queue takes QUEUE_MEMORY_SHARE of it (not the machine's memory, not a fixed size)."""
    import bounds.engine.budget as budget
    from tests.bab.test_neuron_split import hard_unsat_region, make_search
    from verifier.bab.neuron_options import QUEUE_MEMORY_SHARE

    rss = budget.proc_field("/proc/self/status", "VmRSS")
    monkeypatch.setattr(budget, "_host_limit", None)
    monkeypatch.setattr(budget.heap, "retained_free_bytes", lambda: 0)  # test_heap.py's
    machine = budget.free_bytes("cpu")
    budget.set_host_limit(rss + (64 << 20))
    try:
        free = budget.free_bytes("cpu")
        assert 0 < free <= 64 << 20 and free < machine
        graph, region = hard_unsat_region()
        search = make_search(graph, region, attack=False)
        assert 0 < search._queue_bytes() <= QUEUE_MEMORY_SHARE * (64 << 20)
        budget.set_host_limit(rss // 2)  # already past it: nothing free
        assert budget.free_bytes("cpu") == 0
        assert make_search(graph, region, attack=False, memory_bytes=123)._queue_bytes() == 123
    finally:
        budget.set_host_limit(None)
    assert budget.free_bytes("cpu") > 64 << 20


def test_workers_side_by_side_split_the_gpu(monkeypatch):
    """A bench worker's share of a GPU (set_device_share): the engines see no more than the
    share less what the process already holds, and torch's allocator is capped at it."""
    import bounds.engine.budget as budget

    gib = 1 << 30
    caps = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev: (80 * gib, 100 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev: 1 * gib)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda share, dev: caps.append(share))
    monkeypatch.setattr(budget, "_capped", set())
    monkeypatch.setattr(budget, "_device_share", None)
    assert budget.free_bytes("cuda:0") == 80 * gib and caps == []
    budget.set_device_share(0.1)
    assert budget.free_bytes("cuda:0") == 9 * gib
    assert budget.free_bytes("cuda:0") == 9 * gib
    assert caps == [0.1]  # (set once)


def test_the_engines_stop_before_the_run_deadline(monkeypatch):
    """run_methods gives the engines a deadline a margin before the run's (a chunk in flight
    at their deadline must still end in time), and a stage's nested deadline cannot extend
    it."""
    import time

    from bounds.engine import deadline as engine_clock

    seen = {}

    def stage(model, spec, config, device, deadline, progress=None):
        seen["engines"] = engine_clock._DEADLINE.get()
        with engine_clock.engine_deadline(deadline + 100):
            seen["nested"] = engine_clock._DEADLINE.get()
        return "done"

    monkeypatch.setattr(strategy, "_run_methods", stage)
    run_deadline = time.monotonic() + 100
    assert strategy.run_methods(None, None, VerifyConfig(), "cpu", run_deadline) == "done"
    assert run_deadline - strategy.ENGINE_MARGIN_MAX_S <= seen["engines"] < run_deadline - 1
    assert seen["nested"] == seen["engines"]


def test_pass_work_counts_multiply_adds():
    """One backward row through the first convolution: 32x64x64 outputs, 3x3x3 each; then a
    Relu (one per element) and a second convolution (32x3x3 each)."""
    from bounds.engine.budget import prefix_work

    graph = _wide_cnn()
    per_map = 32 * 64 * 64
    assert prefix_work(graph, "c0") == (per_map * 27, 1)
    assert prefix_work(graph, "c1") == (per_map * (27 + 1 + 32 * 9), 3)


def test_the_memory_guard_prices_one_spec_row_not_all(monkeypatch):
    """Wide outputs with a row per class (999 disjuncts on VGG16: 122 GiB for all rows at
    once) are bounded when an interval pass and a one-row backward chunk fit: the passes
    take spec rows in chunks. Before, every bound stage was skipped."""
    from bounds.engine.budget import COEF_COPIES

    graph = random_mlp([20, 8, 400], seed=1)
    one_row = memory_guard.pass_bytes(graph, torch.float64)
    free = 4 * one_row
    monkeypatch.setattr(memory_guard, "free_bytes", lambda device: free)
    assert strategy._bounds_do_not_fit(graph, "cpu") is None
    all_rows = 399 * COEF_COPIES * 400 * 8  # (the robustness spec's rows at once)
    assert all_rows > memory_guard.PASS_FIT_SHARE * free
    monkeypatch.setattr(memory_guard, "free_bytes", lambda device: one_row)
    assert "not bounded" in strategy._bounds_do_not_fit(graph, "cpu")
