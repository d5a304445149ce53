"""``--device auto``: the GPU only where one bound pass is large enough to pay for it.

The rule (a cost model; no GPU was at hand to measure the constants, so they are stated here
as assumptions to re-measure with ``benchmarks/bound_bench.py`` when one is lent):

* one CROWN pass costs about ``W`` element-rows: the spec rows (at least one per output)
  times the elements of every value, plus backward CROWN on every position of the values
  that relaxations need (``bounds.engine.budget.backward_cost``), capped at what the engines
  would chunk into CPU_SECONDS_CAP seconds;
* on the CPU that takes ``W / CPU_ELEMENT_RATE`` seconds (one core, float64: about 5e8
  element-rows a second, measured on this machine's conv and linear backward passes);
* on a GPU the arithmetic is nearly free at these sizes and the cost is the kernel
  launches: about LAUNCHES_PER_NODE launches of LAUNCH_S each per graph node per pass, plus
  copying the parameters once (PCIe at COPY_BYTES_RATE);
* ``auto`` takes the GPU only when the CPU estimate exceeds GPU_MARGIN times the GPU
  estimate, so a wrong constant costs at most that factor on small models, which are fast
  anyway. ACAS Xu (6x50, 5 inputs): CPU ~0.3 ms a pass, GPU ~0.9 ms: CPU (the GPU was
  measured several times slower there). A TinyYOLO pass: CPU minutes, GPU well under a
  second: GPU.
"""

from __future__ import annotations

import math

import torch

from bounds.engine.analysis import relaxed_inputs
from bounds.engine.budget import backward_cost, value_elements
from bounds.graph import Graph

CPU_ELEMENT_RATE = 5e8  # element-rows per second, one CPU core, float64
LAUNCH_S = 1e-5  # seconds per GPU kernel launch
LAUNCHES_PER_NODE = 12  # relaxation, sign split, vector-Jacobian product, concretisation ...
COPY_BYTES_RATE = 1e10  # bytes per second host to device
GPU_MARGIN = 3.0
CPU_SECONDS_CAP = 3600.0


def pass_work(graph: Graph, spec_rows: int) -> float:
    """Element-rows of one CROWN pass with CROWN intermediate bounds (an upper estimate)."""
    out = math.prod(graph.outputs[0].shape)
    final = max(spec_rows, 1) * value_elements(graph)
    inter = backward_cost(graph, relaxed_inputs(graph))
    return min(float(final + inter), CPU_SECONDS_CAP * CPU_ELEMENT_RATE) + out


def cpu_seconds(graph: Graph, spec_rows: int) -> float:
    return pass_work(graph, spec_rows) / CPU_ELEMENT_RATE


def gpu_seconds(graph: Graph) -> float:
    launches = LAUNCHES_PER_NODE * len(graph.nodes) * LAUNCH_S
    params = 8 * graph.parameter_count()
    return launches + params / COPY_BYTES_RATE


def gpu_pays(graph: Graph, spec_rows: int) -> bool:
    """Whether one bound pass is estimated at least GPU_MARGIN times faster on a GPU."""
    return cpu_seconds(graph, spec_rows) > GPU_MARGIN * gpu_seconds(graph)


def choose_device(requested: str, graph: Graph | None, spec_rows: int) -> str:
    """``cpu`` or ``cuda``: ``requested`` unless it is ``auto``; ``auto`` takes ``cuda`` only
    when a GPU is present and :func:`gpu_pays` (never for a model the engines cannot bound,
    ``graph`` None: its attacks run onnxruntime on the CPU)."""
    if requested != "auto":
        return requested
    if graph is None or not torch.cuda.is_available():
        return "cpu"
    return "cuda" if gpu_pays(graph, spec_rows) else "cpu"
