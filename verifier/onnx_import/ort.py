"""onnxruntime sessions for imported models, created once per model and shared.

The attack, counterexample validation and the differential check all run the original ONNX
model; ``ort_session`` caches one single-threaded session per model (the only cache of
sessions: ``verifier.validate`` uses it too).
"""

from __future__ import annotations

import hashlib
import math
import threading

import numpy as np

_SESSIONS: dict[bytes, object] = {}  # by SHA-256 of the model bytes, oldest first
_LOCK = threading.Lock()
_MAX_SESSIONS = 8
# The most recent (model bytes object, session): repeated calls for one model skip the hash.
_LAST_SESSION: tuple[bytes, object] | None = None
_EXPOSING: dict[str, object] = {}
# (id(session), output names) -> (session, each output's shape for one point, or None where
# some output has no batch axis): run_batched
_ONE_POINT_SHAPES: dict[tuple, tuple[object, list[tuple] | None]] = {}


def ort_session(model):
    """The cached onnxruntime session of ``model`` (an ImportedModel or its bytes): one per
    model in the process, shared by the attacks, the validation of counterexamples and the
    differential check; thread-safe."""
    global _LAST_SESSION
    data = model if isinstance(model, bytes) else model.onnx_bytes
    last = _LAST_SESSION  # one read of an immutable pair: safe across threads
    # Hashing a large model on every call costs milliseconds; the same bytes object skips it.
    if last is not None and last[0] is data:
        return last[1]
    key = hashlib.sha256(data).digest()
    with _LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = new_session(data)
            if len(_SESSIONS) >= _MAX_SESSIONS:
                _SESSIONS.pop(next(iter(_SESSIONS)))
            _SESSIONS[key] = session
        _LAST_SESSION = (data, session)
        return session


def new_session(data: bytes):
    """A fresh onnxruntime CPU session, one thread, its C++ log silenced below fatal."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # session-init errors are logged by the default logger
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: its errors reach us as exceptions, and a
    # refused model must give one line on stderr, not a C++ log as well
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def session_exposing(model, names: list[str]):
    """A session of ``model`` whose outputs are the model's own followed by the intermediate
    ONNX values ``names`` (to see where two evaluations part ways); the latest one is kept."""
    key = (model.onnx_bytes, tuple(names))
    if _EXPOSING.get("key") != key:
        _EXPOSING.clear()
        _EXPOSING.update(key=key, session=_exposing(model.onnx_bytes, names))
    return _EXPOSING["session"]


def _exposing(data: bytes, names: list[str]):
    import onnx

    proto = onnx.load_model_from_string(data)
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return new_session(proto.SerializeToString())


def _input_dtype(type_str: str):
    return np.float64 if "double" in type_str else np.float32


def run_ort(model, flat_points: np.ndarray, session=None) -> list[np.ndarray]:
    """Run the ONNX model on flattened input points ``[N, n_in]`` (inputs concatenated in
    order). Returns one array ``[N, size_k]`` per session output, flattened per point.

    ``session``: another session of the same model (default: the cached one)."""
    session = session or ort_session(model)
    shapes = model.onnx_input_shapes
    sizes = [math.prod(s) for s in shapes]
    metas = session.get_inputs()
    batched = all(len(m.shape) > 0 and not isinstance(m.shape[0], int) for m in metas)
    points = np.asarray(flat_points)
    if batched and all(len(s) > 0 and s[0] == 1 for s in shapes):
        rows = run_batched(session, None, _feeds(model, metas, points, sizes, batch=True),
                           _feeds(model, metas, points[:1], sizes, batch=True), len(points))
        if rows is not None:
            return rows
    rows: list[list[np.ndarray]] = []
    for point in points:
        outs = session.run(None, _feeds(model, metas, point[None], sizes, batch=False))
        rows.append([o.reshape(-1) for o in outs])
    return [np.stack([r[k] for r in rows]) for k in range(len(rows[0]))]


def run_batched(session, names: list[str] | None, feeds: dict, first: dict,
                n: int) -> list[np.ndarray] | None:
    """Outputs ``[n, size]``, point by point, of one onnxruntime call on ``n`` points stacked
    along the inputs' symbolic batch axis (``feeds``; ``first``: the first point alone). An
    output need not carry the batch on its axis 0 (an LSTM's ``[seq, dirs, batch, hidden]``,
    a Transpose in between): its batch axis is the one axis whose size is n times the one-point
    size, of size 1 for one point. None when some output has no such axis (the caller then runs
    the points one at a time)."""
    key = (id(session), None if names is None else tuple(names))
    cached = _ONE_POINT_SHAPES.get(key)
    if cached is not None and cached[0] is session and cached[1] is None:
        return None  # an earlier call found an output with no batch axis (the model's shape)
    outs = session.run(names, feeds)
    if cached is None or cached[0] is not session:
        if len(_ONE_POINT_SHAPES) >= _MAX_SESSIONS:
            _ONE_POINT_SHAPES.clear()
        one = [np.shape(o) for o in session.run(names, first)]
        _ONE_POINT_SHAPES[key] = cached = (session, one)
    rows = []
    for out, one in zip(outs, cached[1], strict=True):
        axis = batch_axis(np.shape(out), one, n)
        if axis is None:
            _ONE_POINT_SHAPES[key] = (session, None)  # later calls go point by point at once
            return None
        rows.append(np.moveaxis(np.asarray(out), axis, 0).reshape(n, -1))
    return rows


def batch_axis(shape: tuple, one: tuple, n: int) -> int | None:
    """The axis of a batched value of ``shape`` that holds ``n`` points, given the value's
    shape for one point; None when there is not exactly one (a value that does not depend on
    the batch, or one whose batch was merged into a larger axis, whose order is unknown)."""
    if len(shape) != len(one):
        return None
    if n == 1:
        return 0 if len(shape) > 0 else None
    differ = [k for k, (a, b) in enumerate(zip(shape, one, strict=True)) if a != b]
    if len(differ) != 1 or one[differ[0]] != 1 or shape[differ[0]] != n:
        return None
    return differ[0]


def input_feeds(model, point: np.ndarray) -> dict:
    """onnxruntime's input feeds for one flat point ``[1, n_in]``, in the ONNX input shapes."""
    metas = ort_session(model).get_inputs()
    sizes = [math.prod(s) for s in model.onnx_input_shapes]
    return _feeds(model, metas, point, sizes, batch=False)


def _feeds(model, metas, points, sizes, batch: bool) -> dict:
    feeds, start = {}, 0
    for meta, shape, size in zip(metas, model.onnx_input_shapes, sizes, strict=True):
        chunk = points[:, start:start + size]
        start += size
        target = (len(points), *shape[1:]) if batch else shape
        feeds[meta.name] = chunk.reshape(target).astype(_input_dtype(meta.type))
    return feeds
