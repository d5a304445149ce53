"""Einsum of one or two operands as ReduceSum, Transpose, Reshape and one MatMul.

Each operand first sums the letters no one else reads; two operands are then arranged as
[batch, free, contracted] and [batch, contracted, free], flattened to three axes, multiplied
(a MatMul: Linear where one side is constant) and laid out in the output's order. Ellipses
become letters of their own. Repeated letters within one operand (diagonals) and batch letters
whose sizes differ (broadcasting) are refused.
"""

from __future__ import annotations

import math
import string

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import ConvertContext, Dyn, shape_of, unsupported
from verifier.onnx_import.converters.linear import _as_float, _matmul
from verifier.onnx_import.converters.shape import reshape_value
from verifier.onnx_import.registry import converter


def _terms(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """(input terms, output term) with every ellipsis spelt out in spare capital letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ModelError(f"equation {equation!r} names {len(terms)} operands, got {len(ranks)}")
    spare = [c for c in string.ascii_uppercase if c not in equation]
    widest = max((r - (len(t) - 3) for t, r in zip(terms, ranks, strict=True) if "..." in t),
                 default=0)
    dots = "".join(spare[:widest])
    terms = [t.replace("...", dots[widest - (r - (len(t) - 3)):]) if "..." in t else t
             for t, r in zip(terms, ranks, strict=True)]
    if arrow:
        out = rhs.replace("...", dots)
    else:  # implicit output: the ellipsis, then the letters used once, in order
        letters = "".join(terms)
        out = dots + "".join(sorted(c for c in set(letters) if letters.count(c) == 1
                                    and c not in dots))
    return terms, out


def _transpose(ctx: ConvertContext, v, term: str, order: str):
    if term == order:
        return v
    perm = tuple(term.index(c) for c in order)
    if isinstance(v, Dyn):
        return ctx.emit("Transpose", [v], tuple(v.shape[p] for p in perm), {"perm": perm})
    return np.transpose(v, perm)


def _reshape(ctx: ConvertContext, v, shape):
    return reshape_value(ctx, v, shape) if isinstance(v, Dyn) else np.reshape(v, shape)


def _sum_out(ctx: ConvertContext, v, term: str, keep: set[str]) -> tuple[object, str]:
    """``v`` summed over the letters of ``term`` not in ``keep``."""
    axes = tuple(i for i, c in enumerate(term) if c not in keep)
    if not axes:
        return v, term
    rest = "".join(c for c in term if c in keep)
    if not isinstance(v, Dyn):
        return np.sum(v, axis=axes), rest
    shape = tuple(d for i, d in enumerate(v.shape) if i not in axes)
    return ctx.emit("ReduceSum", [v], shape, {"axes": axes, "keepdims": 0}), rest


@converter("Einsum", 12)
def einsum(ctx: ConvertContext, node) -> None:
    values = [ctx.value(n) for n in node.input]
    values = [v if isinstance(v, Dyn) else _as_float(v) for v in values]
    equation = ctx.attr(node, "equation")
    terms, out = _terms(equation, [len(shape_of(v)) for v in values])
    if any(len(set(t)) != len(t) for t in terms) or len(set(out)) != len(out):
        raise unsupported(node, f"a repeated letter in {equation!r} (a diagonal)")
    size: dict[str, int] = {}
    for term, v in zip(terms, values, strict=True):
        for c, d in zip(term, shape_of(v), strict=True):
            if size.setdefault(c, d) != d:
                raise unsupported(node, f"letter {c!r} of sizes {size[c]} and {d} "
                                        "(broadcasting)")
    if len(values) == 1:
        v, term = _sum_out(ctx, values[0], terms[0], set(out))
        ctx.bind(node.output[0], _transpose(ctx, v, term, out))
        return
    if len(values) != 2:
        raise unsupported(node, f"{len(values)} operands (one or two are handled)")
    (a, b), (ta, tb) = values, terms
    a, ta = _sum_out(ctx, a, ta, set(out) | set(tb))
    b, tb = _sum_out(ctx, b, tb, set(out) | set(ta))
    batch = "".join(c for c in ta if c in tb and c in out)
    contract = "".join(c for c in ta if c in tb and c not in out)
    free_a = "".join(c for c in ta if c not in tb)
    free_b = "".join(c for c in tb if c not in ta)
    dims = [math.prod(size[c] for c in part) for part in (batch, free_a, contract, free_b)]
    a = _reshape(ctx, _transpose(ctx, a, ta, batch + free_a + contract), dims[:3])
    b = _reshape(ctx, _transpose(ctx, b, tb, batch + contract + free_b),
                 (dims[0], dims[2], dims[3]))
    if not isinstance(b, Dyn) and dims[0] == 1:  # (a Linear: weights without a batch axis)
        b = np.reshape(b, dims[2:])
    y = _matmul(ctx, a, b)
    laid = batch + free_a + free_b
    y = _reshape(ctx, y, tuple(size[c] for c in laid) or (1,))
    ctx.bind(node.output[0], _transpose(ctx, y, laid, out))
