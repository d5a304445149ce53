"""The harness's own view of a case, independent of the verifier's code: onnxruntime sessions,
float32 points of the generator's boxes, violation margins, sampled ground truth and the
counterexample check.

Real-valued boxes: a spec box is a set of reals, the network a float32 program. Sampling uses
the float32 points inside each box; a coordinate whose interval holds no float32 (a pinned
value such as -0.4298715077881821) takes its two float32 neighbours instead, and the point is
then marked ``hull`` (outside the real box by less than one float32 ulp). A violation at an
inside point refutes ``unsat`` outright; one found only at hull points is reported separately.

A counterexample is accepted ``exact`` when its float32 value lies in a generator box, or
``tol1e-4`` when it lies within 1e-4 absolute of one (the VNN-COMP checker's tolerance; its 2026
mode accepts only ``exact``); in both cases a fresh onnxruntime session must give an output on
which the generator's condition holds.
"""

from __future__ import annotations

import itertools

import numpy as np

from fuzzing.specs import PropSpec

VNNCOMP_TOL = 1e-4
_SESSIONS: dict[bytes, object] = {}
_CACHE = 4


def session(onnx_bytes: bytes):
    """An onnxruntime CPU session (one thread) of the fuzz harnesses' own, independent of the
    verifier's (verifier.validate), cached for the last few models."""
    import onnxruntime as ort

    sess = _SESSIONS.get(onnx_bytes)
    if sess is None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        if len(_SESSIONS) >= _CACHE:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[onnx_bytes] = sess
    return sess


def ort_outputs(onnx_bytes: bytes, xs: np.ndarray, input_shape) -> np.ndarray:
    """Outputs ``[B, n_out]`` (float64 copies of float32) for flattened inputs ``xs[B, n]``."""
    sess = session(onnx_bytes)
    outs = [sess.run(None, {"x": x.reshape(input_shape).astype(np.float32)})[0]
            for x in np.asarray(xs)]
    return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])


def float32_inside(lower: np.ndarray, upper: np.ndarray):
    """(lo32, hi32): the float32 box inside [lower, upper]; lo32 > hi32 where none exists."""
    lo = lower.astype(np.float32)
    hi = upper.astype(np.float32)
    lo = np.where(lo.astype(np.float64) < lower, np.nextafter(lo, np.float32(np.inf)), lo)
    hi = np.where(hi.astype(np.float64) > upper, np.nextafter(hi, np.float32(-np.inf)), hi)
    return lo.astype(np.float64), hi.astype(np.float64)


def _neighbours(value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 values just below and just above each float64 ``value``."""
    r = value.astype(np.float32)
    below = np.where(r.astype(np.float64) > value, np.nextafter(r, np.float32(-np.inf)), r)
    above = np.where(r.astype(np.float64) < value, np.nextafter(r, np.float32(np.inf)), r)
    return below.astype(np.float64), above.astype(np.float64)


def box_points(lower, upper, n_random: int, n_vertex: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Float32 points of one box: ``n_random`` uniform ones, vertices (all when few, else
    ``n_vertex`` random ones) and the centre; returns (points, inside flags)."""
    lo32, hi32 = float32_inside(lower, upper)
    empty = lo32 > hi32
    below, above = _neighbours((lower + upper) / 2)
    lo32, hi32 = np.where(empty, below, lo32), np.where(empty, above, hi32)
    n = lower.size
    free = np.flatnonzero(hi32 > lo32)
    if len(free) <= int(np.log2(max(n_vertex, 1))):
        bits = np.array(list(itertools.product((0.0, 1.0), repeat=len(free))))
        bits = bits.reshape(-1, len(free))
    else:
        bits = rng.integers(0, 2, (n_vertex, len(free))).astype(np.float64)
    vert = np.tile(lo32, (len(bits), 1))
    vert[:, free] = lo32[free] + bits * (hi32[free] - lo32[free])
    rand = lo32 + rng.random((n_random, n)) * (hi32 - lo32)
    pts = np.concatenate([vert, ((lo32 + hi32) / 2)[None], rand])
    pts = np.clip(pts.astype(np.float32).astype(np.float64), lo32, hi32)
    pick = rng.random(pts.shape) < 0.5  # empty coordinates: either neighbour
    pts[:, empty] = np.where(pick[:, empty], below[empty], above[empty])
    inside = np.all((pts >= lower) & (pts <= upper), axis=1)
    return pts, inside


def violation_margin(prop: PropSpec, ys: np.ndarray) -> np.ndarray:
    """Per output row: max over disjuncts of min over rows of (rhs - coef @ y); >= 0 means the
    unsafe condition holds (a violation)."""
    vals = np.einsum("dko,so->sdk", prop.coef, ys)
    slack = np.where(np.isinf(prop.rhs), np.inf, prop.rhs[None] - vals)
    return slack.min(axis=2).max(axis=1)


def check_counterexample(onnx_bytes: bytes, input_shape, parts: tuple[PropSpec, ...], x
                         ) -> str:
    """'exact' | 'tol1e-4' when ``x`` violates the property given as one-box ``parts`` (a box
    and its condition each; module doc), else why not."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size != int(np.prod(input_shape)) or not np.all(np.isfinite(x)):
        return "invalid: wrong size or not finite"
    if not np.array_equal(x, x.astype(np.float32).astype(np.float64)):
        return "invalid: not float32 values (onnxruntime would run on rounded ones)"
    y = ort_outputs(onnx_bytes, x[None], input_shape)
    verdicts = []
    for part in parts:
        lo, hi = part.boxes[0]
        gap = float(np.max(np.maximum(lo - x, x - hi)))
        margin = float(violation_margin(part, y)[0])
        if gap <= VNNCOMP_TOL and margin >= 0:
            verdicts.append("exact" if gap <= 0 else "tol1e-4")
        else:
            verdicts.append(f"invalid: box distance {gap:.3g}, condition margin {margin:.3g}")
    for best in ("exact", "tol1e-4"):
        if best in verdicts:
            return best
    return verdicts[0]


def _margins(onnx_bytes: bytes, input_shape, prop: PropSpec, pts: np.ndarray) -> np.ndarray:
    return violation_margin(prop, ort_outputs(onnx_bytes, pts, input_shape))


def local_search(onnx_bytes: bytes, input_shape, prop: PropSpec, box: tuple, starts: np.ndarray,
                 rng, rounds: int = 40) -> tuple[float, np.ndarray]:
    """Hill-climb the violation margin from ``starts`` (float32 points of ``box``): Gaussian
    steps on the free coordinates, shrinking on failure, kept on the box's float32 points
    (pinned coordinates keep their sampled neighbour). Returns (best margin, its point).

    Derivative-free and written here so that it shares nothing with the verifier's attacks:
    it only strengthens the sampled refutation of ``unsat`` answers."""
    lower, upper = box
    lo32, hi32 = float32_inside(lower, upper)
    free = lo32 < hi32
    pts = np.asarray(starts, np.float64).copy()
    best = _margins(onnx_bytes, input_shape, prop, pts)
    step = np.full(len(pts), 0.25)
    for _ in range(rounds):
        trial = pts.copy()
        noise = rng.normal(size=pts[:, free].shape) * step[:, None] * (hi32 - lo32)[free]
        trial[:, free] = np.clip((pts[:, free] + noise).astype(np.float32), lo32[free], hi32[free])
        got = _margins(onnx_bytes, input_shape, prop, trial)
        better = got > best
        pts[better], best[better] = trial[better], got[better]
        step = np.where(better, np.minimum(step * 1.5, 0.5), np.maximum(step * 0.6, 1e-4))
    at = int(np.argmax(best))
    return float(best[at]), pts[at]
