"""Products of two perturbed values: Mul x*y, MatMul a@b, Div x/y (all operands dynamic).

McCormick planes for z = x y on the box [lx, ux] x [ly, uy] (exact at the box corners):
  lower  L1 = ly x + lx y - lx ly  (error (x - lx)(y - ly) >= 0)
         L2 = uy x + ux y - ux uy  (error (ux - x)(uy - y) >= 0)
  upper  U1 = uy x + lx y - lx uy  (error (x - lx)(uy - y) >= 0)
         U2 = ly x + ux y - ux ly  (error (ux - x)(y - ly) >= 0)
CROWN takes t L1 + (1 - t) L2 where its coefficient is >= 0 and t' U1 + (1 - t') U2 where it
is < 0; convex combinations of valid planes are valid for every t, t' in [0, 1] (default 1/2,
which halves the worst-case gap; alpha-CROWN optimises alpha = (t, t') per product and spec
row). MatMul sums the elementwise products a_ik b_kj over k, so its backward relaxes every
product and sums coefficients back onto a and b. Div x / y with y bounded away from 0 is
x * r with r = 1/y in [1/uy, 1/ly] (rounded outward): McCormick in (x, r), then r is replaced
by the Reciprocal rule's lower or upper plane in y according to the sign of r's coefficient.
Offsets get an outward margin of a few ulps for the float64 arithmetic that forms them;
non-finite operand bounds make the rule decline (the engine concretises the node instead).
"""

from __future__ import annotations

import torch

from bounds.registry import Alpha, Split
from bounds.rules.common import broadcast_shape, reduce_to_operand
from bounds.types import Interval

MARGIN_ULPS = 8.0


def _finite(*ts: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts)


def _spec(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(1)


def product_planes(coef: torch.Tensor, x: Interval, y: Interval, alpha=None):
    """Backward step through z = x * y (same broadcast shape as ``coef``'s element axes).

    ``coef`` [B, S, *shape]; ``x``/``y`` bounds broadcastable to [B, *shape]; ``alpha``
    [B, S, 2, *shape] or None. Returns (coef on x, coef on y, offset [B, S]), all unreduced
    (shape [B, S, *shape]), such that coef . z >= cx . x + cy . y + offset on the box.
    """
    lx, ux, ly, uy = (_spec(t) for t in (x.lower, x.upper, y.lower, y.upper))
    if alpha is None:
        t_lo = t_up = torch.full((), 0.5, dtype=coef.dtype, device=coef.device)
    else:
        a = alpha.clamp(0.0, 1.0)
        t_lo, t_up = a[:, :, 0], a[:, :, 1]
    # lower plane (coef >= 0) and upper plane (coef < 0): slopes on x, on y, and offsets
    sx_lo = t_lo * ly + (1 - t_lo) * uy
    sy_lo = t_lo * lx + (1 - t_lo) * ux
    b_lo = -(t_lo * lx * ly + (1 - t_lo) * ux * uy)
    sx_up = t_up * uy + (1 - t_up) * ly
    sy_up = t_up * lx + (1 - t_up) * ux
    b_up = -(t_up * lx * uy + (1 - t_up) * ux * ly)
    eps = MARGIN_ULPS * torch.finfo(coef.dtype).eps
    mag_x = torch.maximum(lx.abs(), ux.abs())
    mag_y = torch.maximum(ly.abs(), uy.abs())
    b_lo = b_lo - eps * (b_lo.abs() + sx_lo.abs() * mag_x + sy_lo.abs() * mag_y).detach()
    b_up = b_up + eps * (b_up.abs() + sx_up.abs() * mag_x + sy_up.abs() * mag_y).detach()
    # A+ lower + A- upper = A upper + A+ (lower - upper): five passes over the coefficients
    # and two products, where the two signs' parts took twelve passes (a patch mask times the
    # image, cctsdb's first Mul: 45 ms a step on 12288 pixels)
    pos = coef.clamp(min=0)
    cx = torch.addcmul(coef * sx_up, pos, sx_lo - sx_up)
    cy = torch.addcmul(coef * sy_up, pos, sy_lo - sy_up)
    offset = _sum_products(coef, b_up) + _sum_products(pos, b_lo - b_up)
    return cx, cy, offset


def _sum_products(coef: torch.Tensor, plane: torch.Tensor) -> torch.Tensor:
    """sum over positions of coef [B, S, *shape] * plane (broadcastable, [B or 1, S or 1,
    ...]): a batched matrix-vector product where the plane is one per domain."""
    if plane.shape[1] != 1:
        return (coef * plane).flatten(2).sum(-1)
    b, s = coef.shape[:2]
    per_domain = plane.expand(b, 1, *coef.shape[2:]).reshape(b, -1, 1)
    return torch.bmm(coef.reshape(b, s, -1), per_domain).squeeze(-1)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


def mul_backward(node, coef, args, alpha=None):
    """z = x * y, both dynamic (broadcasting to the output shape)."""
    x, y = args
    if not _finite(x.lower, x.upper, y.lower, y.upper):
        return None, None
    cx, cy, offset = product_planes(coef, x, y, alpha)
    return [reduce_to_operand(cx, _shape(x.lower)), reduce_to_operand(cy, _shape(y.lower))], offset


def reciprocal_bounds(y: Interval) -> Interval:
    """[1/uy, 1/ly] rounded outward by one ulp (y must not contain 0)."""
    lo, hi = 1.0 / y.upper, 1.0 / y.lower
    return Interval(torch.nextafter(lo, torch.full_like(lo, -torch.inf)),
                    torch.nextafter(hi, torch.full_like(hi, torch.inf)))


def div_backward(node, coef, args, alpha=None):
    """z = x / y, both dynamic, y of one sign: McCormick in (x, 1/y), then the Reciprocal
    planes in y."""
    from bounds.rules.exp_log import RECIPROCAL
    from bounds.rules.tangents import relax_curve

    x, y = args
    if not _finite(x.lower, x.upper, y.lower, y.upper):
        return None, None
    if not bool(((y.lower > 0) | (y.upper < 0)).all()):
        return None, None
    r = reciprocal_bounds(y)
    shape = coef.shape[2:]
    y_l, y_u = (t.expand(t.shape[0], *shape) for t in (y.lower, y.upper))
    r = Interval(r.lower.expand(r.lower.shape[0], *shape), r.upper.expand(r.upper.shape[0], *shape))
    cx, cr, offset = product_planes(coef, x, r, alpha)
    rel = relax_curve(RECIPROCAL, "Reciprocal", y_l, y_u)
    pos = cr.clamp(min=0)
    neg = cr - pos
    cy = pos * _spec(rel.lower_slope) + neg * _spec(rel.upper_slope)
    offset = offset + (pos * _spec(rel.lower_offset) + neg * _spec(rel.upper_offset)).flatten(
        2).sum(-1)
    return [reduce_to_operand(cx, _shape(x.lower)), reduce_to_operand(cy, _shape(y.lower))], offset


def _matmul_operands(a: torch.Tensor, b: torch.Tensor):
    """a [B, *, m, k] -> [B, *, m, k, 1]; b [B, *, k, p] -> [B, *, 1, k, p]."""
    return a.unsqueeze(-1), b.unsqueeze(-3)


def _reduce_lead(c: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum a [B, S, *lead, r, c] coefficient onto an operand of static shape ``shape``."""
    extra = c.dim() - 2 - len(shape)
    if extra > 0:
        c = c.sum(dim=tuple(range(2, 2 + extra)))
    return reduce_to_operand(c, shape)


def matmul_backward(node, coef, args, alpha=None):
    """z = a @ b, both dynamic: every product a_ik b_kj relaxed, coefficients summed back."""
    a, b = args
    if a.lower.dim() < 3 or b.lower.dim() < 3:
        return None, None  # vector operands: concretise (not emitted by our importer)
    if not _finite(a.lower, a.upper, b.lower, b.upper):
        return None, None
    if alpha is None:
        return _matmul_midpoint_planes(coef, a, b)
    al, bl = _matmul_operands(a.lower, b.lower)
    au, bu = _matmul_operands(a.upper, b.upper)
    c = coef.unsqueeze(-2)  # [B, S, *lead, m, 1, p]
    shape = broadcast_shape(c.shape[2:], al.shape[1:], bl.shape[1:])
    c = c.expand(*coef.shape[:2], *shape)
    ca, cb, offset = product_planes(c, Interval(al, au), Interval(bl, bu), alpha)
    return [_reduce_lead(ca.sum(-1), _shape(a.lower)),
            _reduce_lead(cb.sum(-3), _shape(b.lower))], offset


def _matmul_midpoint_planes(coef: torch.Tensor, a: Interval, b: Interval):
    """``matmul_backward`` with the default planes (t = t' = 1/2) as matrix products: both
    planes of a_ik b_kj then have the slopes mid(b_kj) on a_ik and mid(a_ik) on b_kj, so the
    coefficients are coef @ mid(b)^T and mid(a)^T @ coef, and the offsets' sums over k are
    products of the bound matrices; no [*lead, m, k, p] tensor of planes is formed (attention's
    Q K^T and weights @ V). The margin covers each term as ``product_planes``' does, with
    |sums| bounded by sums of |terms|, plus k ulps for the sums over k themselves."""
    la, ua, lb, ub = (_spec(t) for t in (a.lower, a.upper, b.lower, b.upper))
    mid_a, mid_b = (la + ua) / 2, (lb + ub) / 2
    ca = coef @ mid_b.transpose(-1, -2)  # [B, S, *lead, m, k]
    cb = mid_a.transpose(-1, -2) @ coef  # [B, S, *lead, k, p]
    # offsets summed over k: lower -(la lb + ua ub) / 2, upper -(la ub + ua lb) / 2
    off_lo = -(la @ lb + ua @ ub) / 2
    off_up = -(la @ ub + ua @ lb) / 2
    abs_la, abs_ua, abs_lb, abs_ub = la.abs(), ua.abs(), lb.abs(), ub.abs()
    mag_a, mag_b = torch.maximum(abs_la, abs_ua), torch.maximum(abs_lb, abs_ub)
    slopes = mag_a @ mid_b.abs() + mid_a.abs() @ mag_b
    eps = (MARGIN_ULPS + a.lower.shape[-1]) * torch.finfo(coef.dtype).eps
    off_lo = off_lo - eps * ((abs_la @ abs_lb + abs_ua @ abs_ub) / 2 + slopes)
    off_up = off_up + eps * ((abs_la @ abs_ub + abs_ua @ abs_lb) / 2 + slopes)
    pos = coef.clamp(min=0)
    offset = (pos * off_lo + (coef - pos) * off_up).flatten(2).sum(-1)
    return [_reduce_lead(ca, _shape(a.lower)), _reduce_lead(cb, _shape(b.lower))], offset


def alpha_shape(node, args) -> tuple[int, ...] | None:
    """Per-sample shape of a product node's alpha (after the [B, S, 2] axes), or None."""
    if len(node.dynamic_inputs) != 2:
        return None
    if node.op == "MatMul":
        a, b = args
        if a.lower.dim() < 3 or b.lower.dim() < 3:
            return None
        al, bl = _matmul_operands(a.lower, b.lower)
        return tuple(broadcast_shape(al.shape[1:], bl.shape[1:]))
    return tuple(node.shape)


def product_alpha_init(node, args, n_spec: int) -> torch.Tensor | None:
    """Initial alpha [B, S, 2, *elements] = 1/2 (the default planes)."""
    shape = alpha_shape(node, args)
    if shape is None:
        return None
    x = args[0].lower
    return torch.full((x.shape[0], n_spec, 2, *shape), 0.5, dtype=x.dtype, device=x.device)


def two_dynamic(node) -> bool:
    """A product of two perturbed values (not an affine scaling by a constant)."""
    return len(node.dynamic_inputs) == 2


#: McCormick plane mixing (t, t') per product of two dynamic operands.
PRODUCT_ALPHA = Alpha(product_alpha_init, structured=True, applies=two_dynamic)
#: GenBaB splits an operand element of a product of two dynamic values at the midpoint
#: (``bounds.lookup.products``), which tightens the McCormick planes downstream.
PRODUCT_SPLIT = Split("midpoint", "operands")
