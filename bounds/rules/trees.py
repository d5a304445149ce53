"""TreeLeaves(x; lower, upper, values, tree): the leaf values each tree of an ensemble gives x.

A tree ensemble (``ai.onnx.ml`` TreeEnsembleClassifier / Regressor) is imported as this node
followed by a sum over trees (``converters/trees.py``). Each leaf is the box of feature values
its path admits: consts 1 and 2 hold, per leaf and feature, the path's lower and upper ends
and whether each is strict (``lower``/``upper`` [L, F, 2]: the end, then 1.0 where strict);
const 3 the leaf's values [L, C]; const 4 the tree of each leaf [L] (0..T-1). The output, for
x [..., F], is [..., T, C]: per tree, the values of the one leaf whose box holds x.

Bounds: a leaf can be reached from a box of x when on every feature some value of the box
passes the leaf's ends, strict or not (exact: a box whose upper end is a threshold t does
not reach the leaves beyond x > t); each tree's output then lies between the least and the
greatest of its reachable leaves' values, per output. CROWN's step bounds a linear function
A . y of the outputs exactly per tree: y is constant in x within a leaf, so the least of
A_t . v over tree t's reachable leaves v, summed over trees, is its lower bound (the
per-output intervals lose which outputs come from the same leaf: a classifier's margin
between two classes is bounded by the worst leaf's margin, not by the best score of one leaf
less the worst of another's); nothing flows on to x. Nothing rounds (a selection); the sum
over trees carries the float32 allowance. MILP: ``verifier.milp.choices``.
"""

from __future__ import annotations

import numpy as np
import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.types import Interval


def _consts(args, like: torch.Tensor):
    """The leaf boxes (float64, as x is compared), values (``like``'s dtype) and trees of the
    node's constant arguments (the engine's cached tensors; float32 holds the thresholds,
    which are float32 in ONNX, exactly)."""
    lower, upper, values, tree = args[1:5]
    return (lower.to(torch.float64), upper.to(torch.float64), values.to(like.dtype),
            tree.to(torch.long))


def _trees(node) -> int:
    return int(node.shape[-2])


def _gather_by_tree(score: torch.Tensor, values: torch.Tensor, tree: torch.Tensor, n_trees: int,
                    reduce: str) -> torch.Tensor:
    """For each row of ``score`` [R, L] (a mask or weight per leaf) the per-tree reduction
    of ``values`` [L, C] over the leaves it selects: [R, T, C]. ``reduce``: "sum" (one leaf
    per tree), "amin" or "amax" (over the masked leaves; +-inf where a tree has none)."""
    rows, n_leaves = score.shape
    c = values.shape[1]
    index = tree.view(1, n_leaves, 1).expand(rows, n_leaves, c)
    if reduce == "sum":
        out = torch.zeros(rows, n_trees, c, dtype=values.dtype, device=values.device)
        return out.scatter_add_(1, index, score.unsqueeze(-1).to(values.dtype) * values)
    fill = torch.inf if reduce == "amin" else -torch.inf
    picked = torch.where(score.unsqueeze(-1), values.unsqueeze(0), fill)
    out = torch.full((rows, n_trees, c), fill, dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(1, index, picked, reduce)


def _forward(node, args):
    x = args[0]
    lower, upper, values, tree = _consts(args, x)
    flat = x.reshape(-1, 1, x.shape[-1]).to(torch.float64)
    above = torch.where(lower[..., 1] > 0, flat > lower[..., 0], flat >= lower[..., 0])
    below = torch.where(upper[..., 1] > 0, flat < upper[..., 0], flat <= upper[..., 0])
    inside = (above & below).all(-1)  # [R, L]: one leaf per tree
    out = _gather_by_tree(inside, values, tree, _trees(node), "sum")
    return out.reshape(*x.shape[:-1], *out.shape[1:])


def _reach(x: Interval, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """[R, L]: the leaves each row of x's box can reach: on every feature some value of the
    box's closed interval passes the leaf's ends, strict or not (x > t needs the box's upper
    end above t). NaN ends reach every leaf."""
    lo = x.lower.reshape(-1, 1, x.lower.shape[-1]).to(torch.float64)
    hi = x.upper.reshape(-1, 1, x.upper.shape[-1]).to(torch.float64)
    below = torch.where(lower[..., 1] > 0, hi <= lower[..., 0], hi < lower[..., 0])
    above = torch.where(upper[..., 1] > 0, lo >= upper[..., 0], lo > upper[..., 0])
    return ~(below | above).any(-1)


def reachable_leaves(node, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """[R, L] bool: the leaves each row of the box [lower, upper] (x flattened, R rows of F
    features) can reach: ``_reach``, the one test the bounds and the MILP encoding
    (``verifier.milp.choices``) share."""
    lo_end, hi_end = (torch.as_tensor(np.asarray(node.consts[k]), dtype=torch.float64)
                      for k in (1, 2))
    features = lo_end.shape[1]
    box = Interval(torch.as_tensor(lower, dtype=torch.float64).reshape(-1, features),
                   torch.as_tensor(upper, dtype=torch.float64).reshape(-1, features))
    return _reach(box, lo_end, hi_end).numpy()


def _ibp(node, args):
    x = args[0]
    lower, upper, values, tree = _consts(args, x.lower)
    reach = _reach(x, lower, upper)
    n = _trees(node)
    out_lo = _gather_by_tree(reach, values, tree, n, "amin")
    out_hi = _gather_by_tree(reach, values, tree, n, "amax")
    shape = (*x.lower.shape[:-1], *out_lo.shape[1:])
    return Interval(out_lo.reshape(shape), out_hi.reshape(shape))


def _backward(node, coef, args):
    """No coefficients for x (constant within each leaf); the offset: the lower bound of
    coef . y, per tree the least coef_t . v over its reachable leaves, summed ([B, S])."""
    x = args[0]
    lower, upper, values, tree = _consts(args, coef)
    n_trees, n_out = node.shape[-2:]
    batch, specs = coef.shape[:2]
    reach = _reach(x, lower, upper).reshape(x.lower.shape[0], 1, -1, tree.numel())  # B,1,R,L
    per_tree = coef.reshape(batch, specs, -1, n_trees, n_out)  # [B, S, R, T, C]
    score = torch.zeros(*per_tree.shape[:3], tree.numel(), dtype=coef.dtype, device=coef.device)
    for c in range(n_out):  # coef_t(l) . v_l per leaf, one output at a time (memory)
        score += per_tree[..., c].index_select(-1, tree) * values[:, c]
    score = torch.where(reach, score, torch.inf)  # (x's or coef's batch may broadcast)
    least = torch.full((*score.shape[:3], n_trees), torch.inf, dtype=coef.dtype,
                       device=coef.device)
    least = least.scatter_reduce_(-1, tree.expand_as(score), score, "amin")
    # every tree has a reachable leaf (its leaves cover the feature space); -inf if not
    least = torch.where(torch.isinf(least), -torch.inf, least)
    return [None] * len(node.inputs), least.sum(dim=(2, 3))


RULES = (
    OpRule("TreeLeaves", forward=_forward, ibp=_ibp, backward=_backward, traits=OpTraits(),
           alpha=None, split=None,
           milp=Milp("leaves"), rounding=Rounding.EXACT,
           doc="per tree, the values of the leaf whose box holds x (piecewise constant)"),
)
