"""Window ("patches") coefficients for backward passes over convolutions.

A backward pass that starts from single neurons of a convolutional layer (intermediate
bounds: one row per neuron) carries, for each row, coefficients that are nonzero only over
that neuron's receptive field. :class:`Patches` stores each row's coefficients over a window
of the spatial axes only: ``values`` ``[B, S, L, C, *win]`` (L: the flattened axes before the
channel, C: channels) whose first cell sits at the spatial index ``origin[b, s]`` of the full
value ``[*lead, C, *sp]``. Cells of a window that fall outside the value (a border neuron's
field reaches into the padding) always hold 0, so every operation below equals the same
operation on the dense coefficients (``to_dense``) exactly: a Conv step is the transposed
convolution of the window (the window grows by the kernel), an elementwise relaxation step
multiplies by the planes' values gathered over the window, a dot product sums over it. The
engine turns patches dense when a window stops being small or an op has no window step.

The windows only save work: every result is the dense computation's, reordered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from bounds.engine.box_dot import centre_radius, ends_terms
from bounds.rules.linear import conv_transpose

# A window whose cells exceed this share of the value's spatial cells is made dense (beyond
# it, gathering planes over windows costs more than the dense steps it saves).
DENSE_SHARE = 0.5


@dataclass(frozen=True)
class Patches:
    """Coefficients ``[B, S, *shape]`` stored over one window per row (see module doc)."""

    values: torch.Tensor  # [B, S, L, C, *win]
    origin: torch.Tensor  # [B, S, spatial] long: full spatial index of each window's first cell
    value_shape: tuple[int, ...]  # the full value's static shape (*lead, C, *sp)

    @property
    def shape(self) -> tuple[int, ...]:
        """The dense coefficients' shape [B, S, *value_shape] (callers that only size rows
        from ``coef.shape`` take windows unchanged)."""
        return (*self.values.shape[:2], *self.value_shape)

    @property
    def spatial(self) -> int:
        return self.origin.shape[-1]

    @property
    def sp(self) -> tuple[int, ...]:
        return self.value_shape[len(self.value_shape) - self.spatial:]

    @property
    def win(self) -> tuple[int, ...]:
        return tuple(self.values.shape[4:])

    @property
    def rows(self) -> tuple[int, int]:
        return self.values.shape[0], self.values.shape[1]

    @cached_property
    def _index(self) -> tuple[torch.Tensor, bool]:
        """([B, S, K] flat spatial index of every window cell in the value, cells outside it
        pointing one past the last cell; whether any cell is outside)."""
        b, s = self.rows
        device = self.origin.device
        flat = torch.zeros((b, s, *([1] * self.spatial)), dtype=torch.long, device=device)
        inside = torch.ones_like(flat, dtype=torch.bool)
        for a, (w, n) in enumerate(zip(self.win, self.sp, strict=True)):
            cells = self.origin[..., a].reshape(b, s, 1) + torch.arange(w, device=device)
            view = [b, s] + [1] * self.spatial
            view[2 + a] = w
            cells = cells.reshape(view)
            inside = inside & (cells >= 0) & (cells < n)
            flat = flat * n + cells
        inside = inside.expand(flat.shape) if inside.shape != flat.shape else inside
        if bool(inside.all()):
            return flat.reshape(b, s, -1), False
        return torch.where(inside, flat, math.prod(self.sp)).reshape(b, s, -1), True

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The windows of ``t`` ([B, *shape] or per row [B, S, *shape], broadcastable):
        [B, S, L, C, *win]; cells outside the value read 0 (an appended zero cell: never
        0 * inf)."""
        b, s = self.rows
        nd = len(self.value_shape)
        per_row = t.dim() == nd + 2
        t = t.expand((b, s, *self.value_shape) if per_row else (b, *self.value_shape))
        src = t.reshape(b, s if per_row else 1, -1, math.prod(self.sp))
        idx, outside = self._index
        if outside:
            src = torch.cat([src, src.new_zeros((*src.shape[:3], 1))], 3)
        lc = src.shape[2]
        out = torch.gather(src.expand(b, s, lc, src.shape[3]), 3,
                           idx.unsqueeze(2).expand(b, s, lc, idx.shape[-1]))
        return out.reshape(self.values.shape)

    def dot(self, t: torch.Tensor) -> torch.Tensor:
        """sum over positions of coef * t ([B, S])."""
        return (self.values * self.gather(t)).flatten(2).sum(-1)

    def with_values(self, values: torch.Tensor) -> Patches:
        """The same windows holding ``values`` (their cell index kept when already built)."""
        out = Patches(values, self.origin, self.value_shape)
        if "_index" in self.__dict__ and values.shape[:2] == self.values.shape[:2] and (
                values.shape[4:] == self.values.shape[4:]):
            out.__dict__["_index"] = self.__dict__["_index"]  # (a cached_property's slot)
        return out

    def to_dense(self) -> torch.Tensor:
        """The coefficients [B, S, *shape] (cells outside the value drop).

        Written in place into zeros of the dense shape: where some cells are outside, those
        are zeroed and added to the value's first cell (adding exact zeros), inside cells are
        distinct per row and added to 0 (exact). (A scatter into a copy with one extra cell,
        then its slice copied out, took 78 against 32 ms on 1290 rows of 16 x 9 x 9 windows
        over 16 x 16 cells, one thread.)"""
        b, s = self.rows
        idx, outside = self._index
        lc = self.values.shape[2] * self.values.shape[3]
        flat = self.values.reshape(b, s, lc, -1)
        cells = math.prod(self.sp)
        out = flat.new_zeros((b, s, lc, cells))
        if not outside:
            out.scatter_(3, idx.unsqueeze(2).expand(b, s, lc, idx.shape[-1]), flat)
            return out.reshape(b, s, *self.value_shape)
        inside = (idx < cells).unsqueeze(2)
        at = idx.clamp(max=cells - 1).unsqueeze(2).expand(b, s, lc, idx.shape[-1])
        out.scatter_add_(3, at, torch.where(inside, flat, 0.0))
        return out.reshape(b, s, *self.value_shape)


def _layout(shape: tuple[int, ...], spatial: int) -> tuple[int, int]:
    """(L, C) of a value [*lead, C, *sp]."""
    c = shape[len(shape) - spatial - 1]
    return math.prod(shape[: len(shape) - spatial - 1]), c


# Rows of a position's lower bound (+1) and of its negated upper bound (-1).
BOTH_SIDES = (1.0, -1.0)


def neuron_rows(shape: tuple[int, ...], spatial: int, idx: torch.Tensor,
                dtype: torch.dtype, signs: tuple[float, ...] = BOTH_SIDES) -> Patches:
    """Rows [V, len(signs) m] at the flat positions ``idx`` [V, m] of a value of static
    ``shape``, as 1-cell windows: one block of m rows per sign (the default +1 then -1:
    lower and negated upper bounds of those neurons)."""
    v, m = idx.shape
    cells = math.prod(shape[len(shape) - spatial:])
    ell, c = _layout(shape, spatial)
    rows = torch.cat([idx] * len(signs), 1)
    values = torch.zeros((v, len(signs) * m, ell * c), dtype=dtype, device=idx.device)
    sign = torch.cat([torch.full((v, m, 1), s, dtype=dtype, device=idx.device)
                      for s in signs], 1)
    values.scatter_(2, torch.div(rows, cells, rounding_mode="floor").unsqueeze(-1), sign)
    cell, origin = rows % cells, []
    for n in reversed(shape[len(shape) - spatial:]):
        origin.insert(0, cell % n)
        cell = torch.div(cell, n, rounding_mode="floor")
    return Patches(values.reshape(v, len(signs) * m, ell, c, *([1] * spatial)),
                   torch.stack(origin, -1), tuple(shape))


def from_dense(coef: torch.Tensor, shape: tuple[int, ...], spatial: int) -> Patches | None:
    """Window coefficients of ``coef`` [B, S, *shape] when the nonzeros of every row fit a
    window of at most DENSE_SHARE / 4 of the spatial cells (else None)."""
    if spatial < 1 or len(shape) < spatial + 1:
        return None
    b, s = coef.shape[:2]
    sp = shape[len(shape) - spatial:]
    cells = math.prod(sp)
    mask = coef.detach().reshape(b * s, -1, cells) != 0
    # more nonzeros than the largest windows hold: dense (and no index list of every one)
    if int(mask.sum()) > b * s * mask.shape[1] * DENSE_SHARE * cells / 4:
        return None
    nz = mask.nonzero()  # [N, 3]: row, lc, cell
    if nz.shape[0] == 0:
        return None
    row, cell = nz[:, 0], nz[:, 2]
    first, size = [], []
    for a in reversed(range(spatial)):  # unravel the cell index, last axis first
        pos = cell % sp[a]
        cell = torch.div(cell, sp[a], rounding_mode="floor")
        lo = pos.new_full((b * s,), sp[a]).scatter_reduce(0, row, pos, "amin")
        hi = pos.new_full((b * s,), -1).scatter_reduce(0, row, pos, "amax")
        empty = hi < 0  # rows with no nonzero: any window, at 0
        lo, hi = torch.where(empty, 0, lo), torch.where(empty, 0, hi)
        first.insert(0, lo.reshape(b, s))
        size.insert(0, int((hi - lo).max()) + 1)
    if math.prod(size) * 4 > DENSE_SHARE * cells:
        return None
    ell, c = _layout(shape, spatial)
    probe = Patches(coef.new_zeros(()).expand(b, s, ell, c, *size), torch.stack(first, -1),
                    tuple(shape))
    return probe.with_values(probe.gather(coef))


def small(p: Patches) -> bool:
    """Whether the windows are still worth keeping (else the engine makes them dense)."""
    return math.prod(p.win) <= DENSE_SHARE * math.prod(p.sp)


def add(a: Patches, b: Patches) -> Patches | None:
    """a + b over the union of their windows, when the windows of every row sit at the same
    relative offset (two branches of a residual block); None otherwise (add them dense)."""
    if a.value_shape != b.value_shape or a.spatial != b.spatial:
        return None
    if a.win == b.win and torch.equal(a.origin, b.origin):
        return a.with_values(a.values + b.values)
    origin = torch.minimum(a.origin, b.origin)
    off_a, off_b = a.origin - origin, b.origin - origin
    if not (bool((off_a == off_a[:1, :1]).all()) and bool((off_b == off_b[:1, :1]).all())):
        return None
    oa, ob = off_a[0, 0].tolist(), off_b[0, 0].tolist()
    win = [max(x + wa, y + wb) for x, y, wa, wb in zip(oa, ob, a.win, b.win, strict=True)]
    values = a.values.new_zeros((*a.values.shape[:4], *win))
    for off, part in ((oa, a.values), (ob, b.values)):
        region = (Ellipsis, *(slice(o, o + w) for o, w in zip(off, part.shape[4:], strict=True)))
        values[region] = values[region] + part
    return Patches(values, origin, a.value_shape)


def _mask_outside(values: torch.Tensor, origin: torch.Tensor, sp) -> torch.Tensor:
    """Zero the window cells that fall outside the value (spatial sizes ``sp``)."""
    b, s = values.shape[:2]
    spatial = origin.shape[-1]
    mask = None
    for a, n in enumerate(sp):
        w = values.shape[4 + a]
        cells = origin[..., a].reshape(b, s, 1) + torch.arange(w, device=origin.device)
        ok = (cells >= 0) & (cells < n)
        view = [b, s, 1, 1] + [1] * spatial
        view[4 + a] = w
        ok = ok.reshape(view)
        mask = ok if mask is None else mask & ok
    if bool(mask.all()):
        return values
    return values * mask.to(values.dtype)


def conv_step(p: Patches, w: torch.Tensor, attrs, in_shape: tuple[int, ...],
              bias: torch.Tensor | None) -> tuple[Patches, torch.Tensor | None]:
    """Backward step of a Conv (weight ``w``, ONNX attrs) on window coefficients of its
    output: the transposed convolution of each window (a window of (win - 1) * stride +
    dilated kernel cells of the input, starting at origin * stride - pad), cells in the
    padding zeroed; offset: the windows' coefficients . bias ([B, S] or None)."""
    spatial = w.dim() - 2
    b, s = p.rows
    ell = p.values.shape[2]
    vals = p.values.reshape(b * s * ell, *p.values.shape[3:])
    out = conv_transpose(vals, w, stride=tuple(int(x) for x in attrs["strides"]),
                         dilation=tuple(int(x) for x in attrs["dilations"]),
                         groups=int(attrs["group"]))
    strides = torch.tensor([int(x) for x in attrs["strides"]], device=p.origin.device)
    pads = torch.tensor([int(attrs["pads"][a]) for a in range(spatial)], device=p.origin.device)
    origin = p.origin * strides - pads
    values = out.reshape(b, s, ell, *out.shape[1:])
    in_sp = in_shape[len(in_shape) - spatial:]
    offset = None
    if bias is not None:
        per_channel = p.values.flatten(4).sum(-1)  # [B, S, L, Cout]
        offset = (per_channel @ bias.reshape(-1)).sum(-1)
    return Patches(_mask_outside(values, origin, in_sp), origin, tuple(in_shape)), offset


def avg_pool_step(p: Patches, attrs, in_shape: tuple[int, ...]) -> Patches | None:
    """Backward step of an AveragePool without padding (each output is the mean of its full
    window): a transposed depthwise convolution with 1/K weights; None when padded."""
    kernel = tuple(int(k) for k in attrs["kernel_shape"])
    if any(int(x) for x in attrs["pads"]) or any(int(x) for x in attrs["extra"]):
        return None
    c = p.values.shape[3]
    w = p.values.new_full((c, 1, *kernel), 1.0 / math.prod(kernel))
    return conv_step(p, w, {"strides": attrs["strides"], "dilations": (1,) * len(kernel),
                            "group": c, "pads": (0,) * (2 * len(kernel))}, in_shape, None)[0]


def concretize(p: Patches, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Lower bound [B, S] of coef . x over the box [lower, upper] ([B, *shape])."""
    v = p.values
    if bool(torch.isfinite(lower).all()) and bool(torch.isfinite(upper).all()):
        # the centred form of box_dot (the same bound, and the same gradient, as dense rows)
        centre, radius = centre_radius(lower, upper)
        return (v * p.gather(centre) - v.abs() * p.gather(radius)).flatten(2).sum(-1)
    return ends_terms(v, p.gather(lower), p.gather(upper)).flatten(2).sum(-1)
