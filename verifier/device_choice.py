"""``--device auto``: the GPU only where it was measured faster.

Measured on a lent NVIDIA H200 (its host: 16 cores) against that host's CPU, 2026-12-04,
``benchmarks/gpu_check.sh`` (one CROWN pass, ``bound_bench.py --passes crown``, one torch
thread) and ``relu_bab_bench.py --device`` (10 s of ReLU branch-and-bound):

=====================  =============  ===================  ==================================
model                  ``pass_macs``  one CROWN pass       branch and bound (domains/s)
                                      CPU 1 thread / GPU   CPU 1 thr. / 16 thr. / GPU
=====================  =============  ===================  ==================================
eran sigmoid 6x200     6.2e8 (FC)     0.093 / 0.254 s
mnistfc 256x4          6.2e8 (FC)                          420 / 601 / 526
cora mnist-set         1.3e9 (FC)     0.074 / 0.307 s
oval21 cifar_base_kw   9.4e8 (conv)   0.021 / 0.229 s      124 / 536 / 906
oval21 cifar_wide_kw   4.8e9 (conv)   0.051 / 0.348 s
metaroom 4cnn          3.1e9 (conv)   0.019 / 0.063 s
resnet_2b              3.3e9 (conv)   0.600 / 0.324 s      (root: 5.2 / 2.4 / 1.7 s)
marabou cifar10_large  1.3e10 (conv)  0.947 / 0.282 s
resnet_4b              3.4e10 (conv)  2.574 / 0.728 s
cctsdb patch-1/-3      1.4e11 (conv)  0.74-0.94 / 0.73-0.94 s
carvana UNets          8.7e13 (conv)  0.33 / 0.19-0.20 s
TinyYOLO               4.9e12 (conv)  13.4 / 0.25-4.7 s (the GPU pass refined less)
=====================  =============  ===================  ==================================

A GPU pass costs a floor of about 0.06-0.35 s (kernel launches and synchronisations per node
and per refinement chunk), so one pass on a small model is several times faster on the CPU;
but the search's batched steps on a convolutional net pay on the GPU (oval21 base: 1.7 times
the 16-core CPU's domains per second), and on fully connected nets they do not (mnistfc
256x4: 0.87 times). Hard instances spend their time in the search. Hence the rule:

* ``auto`` takes the GPU when one is present and the model is convolutional with
  ``pass_macs`` >= GPU_MIN_CONV_MACS, or any model with ``pass_macs`` >= GPU_MIN_MACS;
* ``pass_macs``: multiply-adds of one CROWN pass with CROWN intermediate bounds, an upper
  estimate (``bounds.engine.budget.prefix_work``: each value's elements times its op's fan-in;
  the spec rows through the whole graph plus two rows per position of every value a
  relaxation needs, each through the values before it). The engine refines only unstable
  positions, so the real cost varies by instance (metaroom's tiny boxes: 0.019 s for an
  estimate of 3e9): the estimate ranks models, it does not time them.

ACAS Xu (4e6), mnistfc, eran and cora MLPs stay on the CPU; oval21, cifar10_resnet,
marabou-cifar10, metaroom and the scale set's CNNs go to the GPU. Not measured: nonlinear
(GenBaB) searches and input splitting on the GPU; a GPU other than the H200.
"""

from __future__ import annotations

import torch

from bounds.engine.analysis import relaxed_inputs
from bounds.engine.budget import prefix_work
from bounds.graph import Graph

GPU_MIN_CONV_MACS = 5e8  # below oval21 base (9.4e8, whose search is 1.7x faster on the GPU)
GPU_MIN_MACS = 1e10  # any model: above every fully connected benchmark net (cora: 1.3e9)
CONVOLUTIONS = ("Conv", "ConvTranspose")


def pass_macs(graph: Graph, spec_rows: int) -> float:
    """Multiply-adds of one CROWN pass with CROWN intermediate bounds (an upper estimate)."""
    total = max(spec_rows, 1) * prefix_work(graph)[0]
    for name in relaxed_inputs(graph):
        numel = 1
        for d in graph.shape_of(name):
            numel *= d
        total += 2 * numel * prefix_work(graph, name)[0]
    return float(total)


def convolutional(graph: Graph) -> bool:
    return any(node.op in CONVOLUTIONS for node in graph.nodes)


def gpu_pays(graph: Graph, spec_rows: int) -> bool:
    """Whether the measured rule (module docstring) sends this model to a GPU."""
    macs = pass_macs(graph, spec_rows)
    return macs >= GPU_MIN_MACS or (convolutional(graph) and macs >= GPU_MIN_CONV_MACS)


def choose_device(requested: str, graph: Graph | None, spec_rows: int) -> str:
    """``cpu`` or ``cuda``: ``requested`` unless it is ``auto``; ``auto`` takes ``cuda`` only
    when a GPU is present and :func:`gpu_pays` (never for a model the engines cannot bound,
    ``graph`` None: its attacks run onnxruntime on the CPU)."""
    if requested != "auto":
        return requested
    if graph is None or not torch.cuda.is_available():
        return "cpu"
    return "cuda" if gpu_pays(graph, spec_rows) else "cpu"
