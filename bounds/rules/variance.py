"""CentredVariance(v, x): v, which the graph computes as the mean over ``axes`` of
(x - mean x)^2 (a normalisation's variance), with the least such mean over x's box as a floor.

Bounds of v itself come through its pieces: the squares of x - mean x, each bounded on its
own interval (IBP: 0 wherever that interval holds 0), or CROWN's tangent planes. Neither sees
that the values share one centre: where the centred intervals reach 0, the variance's lower
end falls to about 0 and the reciprocal square root after it has no finite bound (a CvT at
radius 0.002 stopped there). The exact minimum over x's box is a one-variable convex problem
(``floors.centred_square_floor``); ``verifier.ir.passes.floor_variances`` puts this node on
the variances the importer writes for LayerNormalization, GroupNorm and InstanceNorm and on
the exporters' decompositions of them. The node is the identity on v for every engine.
"""

from __future__ import annotations

import torch

from bounds.registry import Milp, OpRule, OpTraits, Rounding
from bounds.rules.floors import centred_square_floor


def _floor(node, args) -> torch.Tensor:
    """The least mean of centred squares over x's box, in v's shape ([B, *shape])."""
    x = args[1]
    floor = centred_square_floor(x.lower, x.upper, tuple(a + 1 for a in node.attrs["axes"]))
    return floor.reshape(floor.shape[0], *node.shape)


def _backward(node, coef, args):
    """The identity on v; x only gives the floor."""
    return [coef, None], None


RULES = (
    OpRule("CentredVariance", forward=lambda node, a: a[0], ibp=lambda node, a: a[0],
           backward=_backward, traits=OpTraits(affine=True), floor=_floor, alpha=None,
           split=None, milp=Milp("affine"), rounding=Rounding.EXACT,
           doc="v = mean over axes of (x - mean x)^2, floored at its least value over x's box"),
)
