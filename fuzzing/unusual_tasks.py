"""Tasks that run inside the campaign's worker process (fuzzing/worker.py).

* ``import_check``: our importer on the model file, then our graph evaluated (float32 and
  float64) against onnxruntime outputs that the parent computed; a refusal is returned with its
  message, never raised.
* ``verify``: ``nncert verify`` (method auto, differential check on) on the files, timed here
  from the call to the answer, as a user would time it.
"""

from __future__ import annotations

import time

import numpy as np

from bounds.registry import UnsupportedOpError
from verifier.errors import NncertError

# The clean refusals: the CLI prints one line and exits 2 (verifier/cli/common.classify_error).
REFUSALS = (NncertError, UnsupportedOpError)
IMPORT_TOL = 1e-3  # relative to max(1, |ort|): far above float32 reordering in these tiny nets


def warm_up() -> None:
    """Import the verifier's stages before the first clock starts (as bench's worker does):
    a campaign measures deadlines, not the one-off import of torch and the pipeline."""
    import verifier.pipeline  # noqa: F401
    import verifier.strategy  # noqa: F401


def _graph_outputs(model, points: np.ndarray, dtype) -> np.ndarray:
    import torch

    from bounds.engine.forward import run_graph

    shape = model.graph.inputs[0].shape
    x = torch.as_tensor(points, dtype=dtype).reshape(len(points), *shape)
    with torch.no_grad():
        (out,) = run_graph(model.graph, x)
    return out.reshape(len(points), -1).double().numpy()


def _errors(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per point: worst |ours - ref| / max(1, |ref|) over outputs; a NaN on one side only
    counts as inf, on both as agreement (as the importer's own check,
    ``verifier.onnx_import.check._relative``: a normalisation of a constant vector is NaN in
    onnxruntime and in the IR alike)."""
    with np.errstate(invalid="ignore"):
        err = np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))
    err = np.where(np.isnan(ours) & np.isnan(ref), 0.0, err)
    err = np.where(np.isinf(ref) & (ours == ref), 0.0, err)
    return np.where(np.isnan(err), np.inf, err).max(axis=1)


def import_check(model_path: str, points: list, ref: list) -> dict:
    """{'status': 'ok'|'mismatch'|'refused', 'message', 'error', 'point'} (module doc)."""
    import torch

    from verifier.onnx_import.loader import load_model

    try:
        model = load_model(model_path)
    except REFUSALS as exc:
        return {"status": "refused", "message": f"{type(exc).__name__}: {exc}"}
    pts, ref_arr = np.asarray(points, np.float64), np.asarray(ref, np.float64)
    errs = []
    for dtype in (torch.float32, torch.float64):
        try:
            errs.append(_errors(_graph_outputs(model, pts, dtype), ref_arr))
        except Exception as exc:  # noqa: BLE001 - an evaluation crash is a finding
            return {"status": "crash", "message": f"forward ({dtype}): "
                                                  f"{type(exc).__name__}: {exc}"}
    # A point agrees when either evaluation does: a piecewise-constant op (Floor, Cast to int,
    # comparisons) on a value within rounding of its jump may land either side in either one.
    per_point = np.minimum(*errs)
    at = int(np.argmax(per_point))
    status = "ok" if per_point[at] <= IMPORT_TOL else "mismatch"
    return {"status": status, "message": f"relative error {per_point[at]:.3g} at point {at}",
            "error": float(per_point[at]), "point": at}


def verify(model_path: str, spec_path: str, timeout: float, seed: int = 0) -> dict:
    """One verification run; exceptions become 'refused' (REFUSALS) or 'crash'."""
    from verifier.config import VerifyConfig
    from verifier.pipeline import verify as run_verify

    start = time.monotonic()
    try:
        config = VerifyConfig(timeout=timeout, method="auto", device="cpu", seed=seed)
        res = run_verify(model_path, spec_path, config)
    except REFUSALS as exc:
        return {"status": "refused", "message": f"{type(exc).__name__}: {exc}",
                "time_s": time.monotonic() - start}
    except Exception as exc:  # noqa: BLE001 - a crash is a finding, recorded by the parent
        return {"status": "crash", "message": f"{type(exc).__name__}: {exc}",
                "time_s": time.monotonic() - start}
    cex = res.counterexample
    return {"status": res.verdict, "message": res.message, "method": res.method,
            "time_s": time.monotonic() - start,
            "x": None if cex is None else np.asarray(cex.x, np.float64).tolist()}


def sleep(seconds: float) -> dict:
    """A hang on demand, for the harness's own tests (the worker must be killed)."""
    time.sleep(seconds)
    return {"status": "ok"}


TASKS = {"import_check": import_check, "verify": verify, "sleep": sleep}
