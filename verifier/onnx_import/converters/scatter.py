"""ScatterND: constant indices (data movement: Gather + Where), or indices that are windows of
Range values sliced at input-dependent starts (IR ScatterWindow, bounds/rules/scatter.py).

The second form is what an exporter makes of ``mask[:, x:x + k, y:y + k] = v`` with x, y read
from the input: each index component is either a constant or an element of
Slice(Range(0, d), s, s + k) broadcast over the index grid (IR DynamicSlice of a constant
0, 1, .., d - 1 along the data axis of size d, found by ``ConvertContext.element_origins``).
Accepted when, at starts 0, the written positions form a product of per-axis sets (each
windowed axis a contiguous range) and every update written inside it is the same along each
windowed axis; then the write is U where the position is in the window (and in the constant
components' sets), D elsewhere, for every start >= 0:

* ONNX clamps each Slice of Range values to the axis, which drops exactly the grid points
  whose window position lies outside the data, and no others (each component is the slice's
  value itself, no offset added after it);
* the updates ONNX writes at the surviving positions are the same values: they do not vary
  along a windowed axis. The importer computes the updates at the unclamped shapes (a Shape
  of a slice folds to its static value); an exporter's updates built from such a shape
  (Expand, ConstantOfShape) are uniform along the sliced axes, which is what we check.
  The differential check against onnxruntime samples clamped starts too.

Anything else (updates that depend on the input, a component mixing starts or offset after
the slice, a non-product set, updates that vary along a windowed axis, reduction) is refused
with an UnsupportedOpError naming the reason.
"""

from __future__ import annotations

import math

import numpy as np

from verifier.errors import ModelError
from verifier.onnx_import.context import (
    ConvertContext,
    Dyn,
    is_dyn,
    shape_of,
    unsupported,
)
from verifier.onnx_import.converters.shape import reshape_value
from verifier.onnx_import.registry import converter


def _scatter_sources(indices: np.ndarray, out_shape, upd_shape) -> np.ndarray:
    """For every output position, the flat index of the update written there, or -1 where the
    data passes through (later duplicates win, as in numpy and onnxruntime)."""
    src = np.full(out_shape, -1, dtype=np.int64)
    k = indices.shape[-1]
    where = tuple(np.asarray(indices[..., j], dtype=np.int64) for j in range(k))
    src[where] = np.arange(math.prod(upd_shape), dtype=np.int64).reshape(upd_shape)
    return src


def _constant_scatter(ctx: ConvertContext, node, data, indices, updates):
    """ScatterND with constant indices (reduction "none") is data movement: the updates are
    gathered to the positions they land on, then Where (constant mask) picks them over data."""
    out_shape, upd_shape = shape_of(data), shape_of(updates)
    src = _scatter_sources(indices, out_shape, upd_shape)
    mask, picks = src >= 0, np.maximum(src, 0)
    if isinstance(updates, Dyn):
        flat = reshape_value(ctx, updates, (math.prod(upd_shape),))
        moved = ctx.emit("Gather", [flat, picks], out_shape, {"axis": 0})
    else:
        moved = np.asarray(updates).reshape(-1)[picks]
    if mask.all():
        return moved
    from verifier.onnx_import.converters.arithmetic import emit_broadcast

    return emit_broadcast(ctx, "Where", [mask, moved, data])


@converter("ScatterND", 11)
def scatter_nd(ctx: ConvertContext, node) -> None:
    data, indices, updates = (ctx.value(n) for n in node.input[:3])
    if ctx.attr(node, "reduction", "none") != "none":
        raise unsupported(node, f"reduction {ctx.attr(node, 'reduction')!r}")
    if is_dyn(indices):
        ctx.bind(node.output[0], _window_scatter(ctx, node, data, indices, updates))
        return
    ctx.bind(node.output[0], _constant_scatter(ctx, node, data, np.asarray(indices), updates))


converter("ScatterND", 16)(scatter_nd)
converter("ScatterND", 18)(scatter_nd)


class _Component:
    """One index component (data axis m) over the index grid: constant values, or a window
    position t (the slice element) past the start ``key``."""

    def __init__(self, values: np.ndarray, key=None, start: tuple[str, int] | None = None):
        self.values, self.key, self.start = values, key, start


def _arange_slice(ctx: ConvertContext, node, producer, dim: int) -> tuple[str, int]:
    """The start (IR value, element) of a DynamicSlice of the constant 0, 1, .., dim - 1 along
    one axis; refuses any other producer of an index."""
    ok = (producer is not None and producer.op == "DynamicSlice"
          and len(producer.attrs["axes"]) == 1 and producer.is_const(0)
          and producer.inputs[1] is not None)
    if ok:
        values = np.asarray(producer.consts[0])
        ok = values.shape == (dim,) and np.array_equal(values, np.arange(dim))
    if not ok:
        raise unsupported(node, f"indices of ScatterND {node.name!r}: a component that "
                                "depends on the input must be a Slice of "
                                f"Range(0, {dim}) (its data axis) at an input-dependent start")
    return producer.inputs[1], 0


def _component(ctx, node, origins: list, dim: int, producers: dict) -> _Component:
    """Classify one index component from its elements' origins (``element_origins``)."""
    if all(v is None for v, _, _ in origins):
        values = np.asarray([c for _, _, c in origins])
        if np.any(values != np.round(values)) or np.any((values < -dim) | (values >= dim)):
            raise ModelError(f"ScatterND node {node.name!r}: constant index out of range "
                             f"for an axis of size {dim}")
        return _Component(np.where(values < 0, values + dim, values).astype(np.int64))
    keys, starts, ts = set(), {}, []
    for v, i, c in origins:
        if v is None or c != 0:
            raise unsupported(node, "an index component mixes constants with input-dependent "
                                    "values, or adds an offset after the slice")
        start = _arange_slice(ctx, node, producers.get(v), dim)
        s_name, s_elem = start
        key = ctx.element_origins(Dyn(s_name, _shape(ctx, s_name)))[s_elem]
        if key[0] is not None and key[2] != round(key[2]):
            raise unsupported(node, "a start with a fractional constant offset")
        keys.add(key)
        starts[key] = start
        ts.append(i)
    if len(keys) != 1:
        raise unsupported(node, "one index component reads two different starts")
    key = keys.pop()
    return _Component(np.asarray(ts, dtype=np.int64), key, starts[key])


def _shape(ctx: ConvertContext, name: str):
    for n in reversed(ctx.nodes):
        if n.name == name:
            return tuple(n.shape)
    for v in ctx.values.values():
        if isinstance(v, Dyn) and v.name == name:
            return v.shape
    raise ModelError(f"IR value {name!r} not found")


def _placed_updates(node, comps, grid, data_shape, updates: np.ndarray):
    """U (data's shape) and the constant mask M from the write at starts 0 (module doc)."""
    r = len(comps)
    q0 = np.stack([c.values.reshape(grid) for c in comps], axis=-1).reshape(-1, r)
    sets = [np.unique(q0[:, m]) for m in range(r)]
    for m, c in enumerate(comps):
        if c.key is not None and len(sets[m]) != sets[m][-1] - sets[m][0] + 1:
            raise unsupported(node, "a windowed index component skips positions")
    if len(np.unique(q0, axis=0)) != math.prod(len(s) for s in sets):
        raise unsupported(node, "the written positions are not a product of per-axis sets")
    rows = updates.reshape(len(q0), -1)
    flat = np.ravel_multi_index(tuple(q0.T), data_shape[:r])
    u0 = np.full((math.prod(data_shape[:r]), rows.shape[1]), np.nan)
    u0[flat] = rows  # later duplicates win, as in onnxruntime; they must agree (below)
    if not np.array_equal(u0[flat], rows.astype(np.float64), equal_nan=True):
        raise unsupported(node, "two updates of different values land on one position")
    u0 = u0.reshape(data_shape)
    member = np.zeros(data_shape, dtype=bool)
    member.reshape(-1, rows.shape[1])[flat] = True
    for m, c in enumerate(comps):
        if c.key is None:
            continue
        first = np.take(u0, [sets[m][0]], axis=m)
        inside = np.take(u0, sets[m], axis=m)
        cover = np.take(member, sets[m], axis=m)
        if not np.array_equal(np.where(cover, inside, 0), np.where(cover, first, 0)):
            raise unsupported(node, "the updates vary along an axis written at an "
                                    "input-dependent start")
        u0 = np.broadcast_to(first, data_shape)
        member = np.broadcast_to(np.take(member, [sets[m][0]], axis=m), data_shape)
    return np.where(member, u0, 0.0), member


def _window_scatter(ctx: ConvertContext, node, data, indices: Dyn, updates):
    """ScatterND with input-dependent indices as IR ScatterWindow (module doc)."""
    data_shape, grid, r = tuple(shape_of(data)), indices.shape[:-1], indices.shape[-1]
    if r > len(data_shape) or tuple(shape_of(updates)) != grid + data_shape[r:]:
        raise ModelError(f"ScatterND node {node.name!r}: indices {indices.shape} and updates "
                         f"{shape_of(updates)} do not fit data {data_shape}")
    if is_dyn(updates):
        raise unsupported(node, "indices and updates both depend on the input")
    producers = {n.name: n for n in ctx.nodes}
    origins = ctx.element_origins(indices)
    comps = [_component(ctx, node, origins[m::r], data_shape[m], producers) for m in range(r)]
    windowed = [m for m, c in enumerate(comps) if c.key is not None]
    u, member = _placed_updates(node, comps, grid, data_shape, np.asarray(updates))
    starts = []
    for m in windowed:
        name, elem = comps[m].start
        s = Dyn(name, _shape(ctx, name))
        if s.shape != (1,):
            s = ctx.emit("Gather", [reshape_value(ctx, s, (math.prod(s.shape),)),
                                    np.asarray([elem], dtype=np.int64)], (1,), {"axis": 0})
        starts.append(s)
    start = starts[0] if len(starts) == 1 else ctx.emit("Concat", starts, (len(starts),),
                                                        {"axis": 0})
    attrs = {"axes": tuple(windowed),
             "first": tuple(int(comps[m].values.min()) for m in windowed),
             "last": tuple(int(comps[m].values.max()) for m in windowed)}
    return ctx.emit("ScatterWindow", [data, u, start, member.astype(np.float64)], data_shape,
                    attrs)
