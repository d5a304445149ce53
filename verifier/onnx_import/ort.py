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
        return [o.reshape(len(points), -1) for o in session.run(None, _feeds(model, metas, points,
                                                                             sizes, batch=True))]
    rows: list[list[np.ndarray]] = []
    for point in points:
        outs = session.run(None, _feeds(model, metas, point[None], sizes, batch=False))
        rows.append([o.reshape(-1) for o in outs])
    return [np.stack([r[k] for r in rows]) for k in range(len(rows[0]))]


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
