"""``--device auto``: the GPU only where one bound pass is large enough to pay for it.

The rule is a cost model. No GPU was at hand, so the GPU constants are assumptions to
re-measure with ``benchmarks/bound_bench.py`` when a device is lent; the CPU rate is measured.

* Work of one CROWN pass with CROWN intermediate bounds, in multiply-adds
  (``bounds.engine.budget.prefix_work``: each value's elements times its op's fan-in): the
  spec rows through the whole graph, plus two rows per position of every value a relaxation
  needs, each through the values before it (an upper estimate: only unstable positions are
  refined).
* CPU time: work / CPU_MAC_RATE. Calibrated on this machine (one core, float64):
  cifar10_resnet resnet_4b, estimate 3.4e10 multiply-adds, first CROWN pass 30-35 s, so
  about 1e9 per second of estimated work (the estimate counts every position, the engine
  refines only unstable ones: a conservative rate).
* GPU time: kernel launches dominate at these sizes: LAUNCHES_PER_NODE launches of LAUNCH_S
  per node of every backward pass (the final one and one per refined value), plus copying
  the parameters once (COPY_BYTES_RATE).
* ``auto`` takes the GPU when one is present and the CPU estimate exceeds GPU_MARGIN times
  the GPU estimate; a wrong constant then costs at most that factor on small models. ACAS Xu
  (6x50, 5 inputs, 10 spec rows): CPU ~4 ms, GPU ~7 ms: CPU (the GPU was measured several
  times slower there). mnistfc 256x2 (0.24 s vs 2 ms), MetaRoom 4cnn, resnet_4b (34 s vs
  0.02 s), TinyYOLO, the carvana UNets: GPU.
"""

from __future__ import annotations

import torch

from bounds.engine.analysis import relaxed_inputs
from bounds.engine.budget import prefix_work
from bounds.graph import Graph

CPU_MAC_RATE = 1e9  # estimated multiply-adds per second, one core, float64 (see above)
LAUNCH_S = 1e-5  # seconds per GPU kernel launch
LAUNCHES_PER_NODE = 12  # relaxation, sign split, vector-Jacobian product, concretisation ...
COPY_BYTES_RATE = 1e10  # bytes per second host to device
GPU_MARGIN = 3.0


def pass_macs(graph: Graph, spec_rows: int) -> float:
    """Multiply-adds of one CROWN pass with CROWN intermediate bounds (an upper estimate)."""
    total = max(spec_rows, 1) * prefix_work(graph)[0]
    for name in relaxed_inputs(graph):
        numel = 1
        for d in graph.shape_of(name):
            numel *= d
        total += 2 * numel * prefix_work(graph, name)[0]
    return float(total)


def cpu_seconds(graph: Graph, spec_rows: int) -> float:
    return pass_macs(graph, spec_rows) / CPU_MAC_RATE


def gpu_seconds(graph: Graph) -> float:
    steps = prefix_work(graph)[1] + sum(prefix_work(graph, v)[1] for v in relaxed_inputs(graph))
    return LAUNCHES_PER_NODE * LAUNCH_S * steps + 8 * graph.parameter_count() / COPY_BYTES_RATE


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
