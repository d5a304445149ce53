"""Cost model of the bound engines: memory free on a device, what a pass needs, and which
method bounds the intermediate values at what cost.

Units: an *element-row* is one coefficient (or forward-weight) element carried through one
value's element; a backward pass over rows r from value v touches r x (elements of the values
before v) of them, a forward-mode pass over f free input coordinates touches f x (elements of
every value). Both are linear maps per op, so measured seconds per element-row of one mode
predict the other within a small factor (the engines measure and keep their own rates).
"""

from __future__ import annotations

import math

import torch

from bounds import heap
from bounds.graph import Graph, Node
from bounds.rules.linear import WEIGHTED_OPS, forward_products

# Share of the memory free on the device that one bound pass may hold; the rest is for the
# queue of branch-and-bound domains, onnxruntime, and other processes on the machine.
PASS_MEMORY_SHARE = 0.25
# Tensors of a backward step alive at once, each as large as the coefficients: coef, its
# positive and negative parts, the next coef and the op's vector-Jacobian product.
COEF_COPIES = 5
# Forward mode keeps lower and upper weights of every value until the end of the pass.
FORWARD_COPIES = 2
# Forward-mode intermediate bounds are computed alongside backward CROWN when all of them cost
# at most this share of what backward CROWN would cost on every position it may refine: they
# then only pre-filter (fewer unstable rows for CROWN) and back up the values CROWN cannot
# afford, for a small fraction of the work. That worst case (every position, both sides)
# overstates what CROWN does (unstable positions, one side first where only signs matter):
# at 0.25, one CROWN pass with forward mode, against without it, same bound in every case
# (session 40): torchvision resnet18 at CIFAR shape (ratio 0.080) 87.2 vs 26.1 s,
# mobilenet_v3_small (0.044) 37.8 vs 18.9 s, mnasnet0_5 (0.058) 44.9 vs 22.9 s, the LSTM/GRU
# probes (0.044/0.051) 7.3 vs 6.2 and 6.2 vs 5.6 s, MetaRoom 4cnn_ry (0.073) 0.14 vs 0.03 s;
# the cGAN probe's 4 free inputs (0.0003) 1.80 vs 1.86 s.
FORWARD_COST_SHARE = 0.01
# Below this many multiply-adds (about a second on one core) backward CROWN is cheap enough
# that forward mode only adds work per step: measured with forward mode on every small net,
# ACAS Xu input splitting went from 7.7 to 12.4 s (prop 10) and a GenBaB search on a
# Gelu/Tanh net timed out (the Gelu relaxation's bisection ran twice per value).
FORWARD_MIN_BACKWARD_MACS = 10**9
# Used when the free memory cannot be read (not Linux, no /proc).
DEFAULT_FREE_BYTES = 4 << 30


def proc_field(path: str, key: str) -> int | None:
    """A ``key: N kB`` field of a /proc file in bytes (None where it cannot be read)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def data_bytes() -> int:
    """This process's data segment now (VmData; 0 where it cannot be read)."""
    return proc_field("/proc/self/status", "VmData") or 0


def _rlimit_headroom() -> int | None:
    """Bytes the data segment may still grow under RLIMIT_DATA (None: no limit); the heap's
    free bytes are counted by ``free_bytes``."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - data_bytes())


# Share of a GPU's memory this process may take (None: all of it): workers side by side on
# one device split it (``set_device_share``, bench --jobs), as they split the host's.
_device_share: float | None = None
_capped: set = set()  # (device index, share) whose allocator cap is set


def set_device_share(share: float | None) -> None:
    """Let this process take at most ``share`` of each GPU's memory (None: no limit). Read by
    ``free_bytes``, which also sets torch's allocator cap once CUDA is in use (an allocation
    past it then fails with an out-of-memory error the pipeline answers, not another
    worker's)."""
    global _device_share
    _device_share = share


def _cuda_free(dev: torch.device) -> int:
    free, total = torch.cuda.mem_get_info(dev)
    if _device_share is None:
        return int(free)
    if (dev.index, _device_share) not in _capped:
        torch.cuda.set_per_process_memory_fraction(_device_share, dev)
        _capped.add((dev.index, _device_share))
    left = int(_device_share * total) - torch.cuda.memory_reserved(dev)
    return max(0, min(int(free), left))


# Resident memory this process may reach (None: no limit of its own): a service job's
# memory_mb, which its supervisor enforces on the resident set (server/memory.py), so the
# engines and the search's queue must size themselves to it, not to the machine.
_host_limit: int | None = None


def set_host_limit(limit_bytes: int | None) -> None:
    """Let this process's resident set reach at most ``limit_bytes`` (None: no limit); read
    by ``free_bytes`` for the host."""
    global _host_limit
    _host_limit = limit_bytes


def _host_limit_headroom() -> int | None:
    if _host_limit is None:
        return None
    return max(0, _host_limit - (proc_field("/proc/self/status", "VmRSS") or 0))


def free_bytes(device: torch.device | str) -> int:
    """Memory free on ``device`` now: CUDA's free memory, no more than this process's share of
    the device leaves it; on the host MemAvailable, and no more than this process's
    RLIMIT_DATA or its resident-set limit (``set_host_limit``) leaves it, plus the free
    memory this process's heap holds resident (``bounds.heap.retained_free_bytes``)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return _cuda_free(dev)
    free = proc_field("/proc/meminfo", "MemAvailable") or DEFAULT_FREE_BYTES
    for headroom in (_rlimit_headroom(), _host_limit_headroom()):
        if headroom is not None:
            free = min(free, headroom)
    # what the heap holds free is resident (used, to the OS) but ours to reuse (bounds.heap)
    return free + heap.retained_free_bytes()


def element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def coef_budget(device: torch.device | str, dtype: torch.dtype, cap: int) -> int:
    """Coefficient elements one backward pass may hold: ``cap``, but no more than
    PASS_MEMORY_SHARE of the memory free on ``device`` over COEF_COPIES live copies."""
    fit = int(PASS_MEMORY_SHARE * free_bytes(device)) // (COEF_COPIES * element_size(dtype))
    return max(1, min(cap, fit))


def value_elements(graph: Graph) -> int:
    """Elements of every value of the graph (input included), per domain."""
    return math.prod(graph.inputs[0].shape) + sum(math.prod(n.shape) for n in graph.nodes)


def prefix_elements(graph: Graph, name: str) -> int:
    """Elements of the values up to and including ``name``: what one backward row from
    ``name`` may visit."""
    total = 0
    for node in graph.nodes:
        total += math.prod(node.shape)
        if node.name == name:
            break
    return max(1, total)


def fan_in(node: Node) -> int:
    """Multiply-adds per output element of ``node`` in a linear pass (its weights' reduction
    length: Linear in-features, Conv input channels x kernel; 1 for other ops)."""
    if node.op in WEIGHTED_OPS and 1 in node.consts:
        return forward_products(node.op, node.consts[1].shape, node.attrs)
    if node.op == "MatMul" and node.consts:
        pos, w = next(iter(node.consts.items()))
        return int(w.shape[-2] if pos == 1 and w.ndim >= 2 else w.shape[-1])
    return 1


def prefix_work(graph: Graph, name: str | None = None) -> tuple[int, int]:
    """(multiply-adds per row, nodes) of a backward pass from value ``name`` (None: the
    whole graph)."""
    macs = nodes = 0
    for node in graph.nodes:
        macs += math.prod(node.shape) * fan_in(node)
        nodes += 1
        if node.name == name:
            break
    return max(1, macs), nodes


def backward_cost(graph: Graph, needed: list[str]) -> int:
    """Element-rows of backward CROWN bounding every position of the ``needed`` values (two
    rows each, lower and upper): the most intermediate CROWN can cost per domain."""
    return sum(2 * math.prod(graph.shape_of(v)) * prefix_elements(graph, v) for v in needed)


def forward_cost(graph: Graph, free_inputs: int) -> int:
    """Element-rows of forward-mode linear bounds over ``free_inputs`` input coordinates."""
    return free_inputs * value_elements(graph)


def backward_macs(graph: Graph, needed: list[str]) -> int:
    """Multiply-adds of backward CROWN on every position of the ``needed`` values."""
    return sum(2 * math.prod(graph.shape_of(v)) * prefix_work(graph, v)[0] for v in needed)


def forward_pays(graph: Graph, needed: list[str], free_inputs: int, batch: int,
                 device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether forward-mode bounds go along with backward CROWN: backward CROWN on the needed
    values is expensive (at least FORWARD_MIN_BACKWARD_MACS over the batch), the free inputs
    are few (forward mode at most FORWARD_COST_SHARE of backward CROWN's cost) and their
    weights fit the pass's share of the free memory."""
    if not needed or free_inputs == 0:
        return False
    if batch * backward_macs(graph, needed) < FORWARD_MIN_BACKWARD_MACS:
        return False
    work = forward_cost(graph, free_inputs)
    if work > FORWARD_COST_SHARE * backward_cost(graph, needed):
        return False
    need_bytes = FORWARD_COPIES * batch * work * element_size(dtype)
    return need_bytes <= PASS_MEMORY_SHARE * free_bytes(device)


def ibp_pass_bytes(graph: Graph, batch: int, dtype: torch.dtype) -> int:
    """Memory of one interval pass: lower, upper and rounding allowance of every value."""
    return 3 * batch * value_elements(graph) * element_size(dtype)
