"""Rows of single neurons of a Linear node's output, taken through that node at once.

Intermediate CROWN bounds neuron j of a value y = W x + b from the rows s e_j (s = +1, -1).
The generic pass multiplies those one-hot rows by W, a dense product as costly as any later
step (ERAN 6x200: one of the k products of a k-th layer's pass; mnistfc 256x4: a quarter to a
third of a downstream pass's products). Through the Linear node the row s e_j is exactly

    s e_j . y = s W[j] . x + s b[j],   minus the node's rounding allowance |s e_j| . delta
                                      = delta[j] (``rounding.py``: the pass subtracts it),

so the pass may start at x from the rows s W[j] and the constant s b[j] - delta[j]: the same
numbers as the generic step (a product with one nonzero term is exact), without the product.
"""

from __future__ import annotations

import math

import torch

from bounds.engine.constants import as_tensor
from bounds.engine.results import Intermediates


def linear_rows(inter: Intermediates, name: str, idx: torch.Tensor, signs: tuple[float, ...]
                ) -> tuple[str, torch.Tensor, torch.Tensor] | None:
    """For ``name`` the output of a Linear node with constant weights whose input is one
    value: (that input's name, the rows s W[j] for each s in ``signs`` and each position j of
    ``idx`` [V, m], as [V, len(signs) m, *input shape] (one block per sign), their constants
    s b[j] - delta[j] [V, len(signs) m]); None for any other value."""
    graph = inter.graph
    try:
        node = graph.node(name)
    except KeyError:
        return None
    if node.op != "Linear" or len(node.dynamic_inputs) != 1 or node.inputs[0] is None \
            or 1 not in node.consts or (len(node.inputs) > 2 and node.inputs[2] is not None):
        return None
    w = as_tensor(node.consts[1], inter.device, inter.dtype)
    source = node.inputs[0]
    in_shape = graph.shape_of(source)
    if w.dim() != 2 or math.prod(graph.shape_of(name)) != w.shape[0] \
            or math.prod(in_shape) != w.shape[1]:
        return None  # (a batched matrix product: rows of one position read one slice of x)
    v, m = idx.shape
    rows = w[idx]  # [V, m, in]
    const = torch.zeros((v, m), device=inter.device, dtype=inter.dtype)
    bias = node.consts.get(2)
    if bias is not None:
        const = const + as_tensor(bias, inter.device, inter.dtype).reshape(-1)[idx]
    delta = inter.deltas.get(name)
    allowance = None
    if delta is not None:
        if delta.shape[0] not in (1, v):
            return None
        flat = delta.reshape(delta.shape[0], -1).expand(v, -1)
        allowance = torch.gather(flat, 1, idx)
    coef = torch.cat([s * rows for s in signs], dim=1).reshape(v, len(signs) * m, *in_shape)
    constant = torch.cat([s * const - (0.0 if allowance is None else allowance)
                          for s in signs], dim=1)
    return source, coef, constant
