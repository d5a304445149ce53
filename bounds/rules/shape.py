"""Shape ops: they only move, copy or select elements, so they are affine and monotone.

IBP applies the op to both ends; CROWN's backward step is the generic VJP of ``forward``.
"""

from __future__ import annotations

from bounds.registry import OpRule, OpTraits
from bounds.rules.common import ibp_monotone

_SHAPE = OpTraits(affine=True, monotone=True)


def _reshape(node, args):
    x = args[0]
    return x.reshape(x.shape[0], *node.shape)


def _rule(op, forward, doc):
    return OpRule(op, forward=forward, ibp=ibp_monotone(forward), traits=_SHAPE, doc=doc)


RULES = (
    _rule("Reshape", _reshape, "reshape to the static shape"),
)
