"""Run and judge one case of the unusual-model campaign.

Per case: sampled ground truth in the parent (unusual_oracle.py: random float32 points,
vertices and the centre of every box, onnxruntime outputs; after an ``unsat``, a local search
from the best of them), then two worker tasks
(unusual_tasks.py): the import check and ``verify`` under the case timeout. The worker is
killed ``GRACE_S`` after the timeout, so a hang costs one case, not the campaign.

Outcome: the verdict (sat/unsat/unknown/timeout/error), ``refused`` (an NncertError, the clean
exit-2 refusal) or ``killed``. Problems, by class:

* ``disagreement``: a ``sat`` whose counterexample fails the independent check, an ``unsat``
  where sampling found a violation at a float32 point inside a box, or one where a point off a
  pinned coordinate by under one ulp violates by more than ``HULL_MARGIN`` (the network being
  continuous there, real points of the box then violate too);
* ``overrun``: the answer came later than timeout + ``OVERRUN_S`` (killed runs included);
* ``import-mismatch``: our imported graph disagrees with onnxruntime and nothing refused it;
* ``unclear-refusal``: a refusal that names neither an op of the model nor a mismatch size;
* ``mismatch-refusal``: the differential check refused a model (or sent it to attack only)
  whose import our own comparison found within IMPORT_TOL of onnxruntime (a false refusal,
  item 2 of issue 16);
* ``internal-error``: a bug in a stage that the pipeline turned into ``unknown`` (its message
  says "internal error"): not wrong, but an answer lost to a crash.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from fuzzing.unusual_cases import UnusualCase, write_case
from fuzzing.unusual_oracle import (
    box_points,
    check_counterexample,
    local_search,
    ort_outputs,
    violation_margin,
)
from fuzzing.worker import TaskWorker

OVERRUN_S = 1.0
GRACE_S = 4.0
IMPORT_LIMIT_S = 60.0
HULL_MARGIN = 1e-4
N_RANDOM, N_VERTEX, N_IMPORT_POINTS, N_STARTS = 600, 128, 24, 4


@dataclass
class UnusualResult:
    case_id: str
    ops: list[str]
    spec_kind: str
    placement: str
    gz: bool
    arch: str
    n_in: int
    n_disjuncts: int
    # best violation margin (>= 0: violated) at inside points, sampled (and searched if unsat)
    sampled_inside: float = -np.inf
    sampled_hull: float = -np.inf
    import_status: str = ""
    import_message: str = ""
    outcome: str = ""
    message: str = ""
    method: str = ""
    time_s: float = 0.0  # measured in the worker, from the verify call to its answer
    wall_s: float = 0.0  # measured by the parent (includes the task round trip)
    cex_check: str = ""
    problems: list[str] = field(default_factory=list)

    def problem_classes(self) -> set[str]:
        return {p.split(":", 1)[0] for p in self.problems}


@dataclass
class Sampled:
    """Sampling of a case: best violation margins, points for the import check, and the best
    few points of each box (starts for the local search that tests an ``unsat``)."""

    best: dict
    points: np.ndarray
    outputs: np.ndarray
    starts: list[np.ndarray]


def sample_case(case: UnusualCase, seed: int = 0) -> Sampled:
    """Sample every box of the case (module doc) in onnxruntime."""
    rng = np.random.default_rng([case.seed, case.index, seed, 99])
    best = {"inside": -np.inf, "hull": -np.inf}
    kept_x, kept_y, starts = [], [], []
    for part in case.parts:
        pts, inside = box_points(*part.boxes[0], N_RANDOM, N_VERTEX, rng)
        ys = ort_outputs(case.net.onnx_bytes, pts, case.net.input_shape)
        margin = violation_margin(part, ys)
        for key, mask in (("inside", inside), ("hull", ~inside)):
            if mask.any():
                best[key] = max(best[key], float(margin[mask].max()))
        take = rng.choice(len(pts), size=min(N_IMPORT_POINTS, len(pts)), replace=False)
        kept_x.append(pts[take])
        kept_y.append(ys[take])
        starts.append(pts[np.argsort(-margin)[:N_STARTS]])
    return Sampled(best, np.concatenate(kept_x), np.concatenate(kept_y), starts)


def search_violation(case: UnusualCase, sampled: Sampled, res: UnusualResult) -> None:
    """Local search from the best sampled points of every box (run when the answer is
    ``unsat``); raises res.sampled_inside / sampled_hull when it finds a larger margin."""
    rng = np.random.default_rng([case.seed, case.index, 7])
    for part, starts in zip(case.parts, sampled.starts, strict=True):
        box = part.boxes[0]
        margin, x = local_search(case.net.onnx_bytes, case.net.input_shape, part, box, starts,
                                 rng)
        inside = bool(np.all((x >= box[0]) & (x <= box[1])))
        key = "sampled_inside" if inside else "sampled_hull"
        setattr(res, key, max(getattr(res, key), margin))


def model_op_types(onnx_bytes: bytes) -> set[str]:
    return {n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node}


def refusal_is_clear(message: str, op_types: set[str]) -> bool:
    """A refusal names an op of the model, or a mismatch with its size (a number)."""
    if any(re.search(rf"\b{re.escape(op)}\b", message) for op in op_types):
        return True
    return bool(re.search(r"(mismatch|disagree|error)", message, re.I)
                and re.search(r"\d\.?\d*(e-?\d+)?", message))


def _outcome(answer: dict | None) -> str:
    if answer is None:
        return "killed"
    status = answer.get("status", "crash")
    return {"crash": "error"}.get(status, status)


def judge(case: UnusualCase, res: UnusualResult, answer: dict | None, timeout: float) -> None:
    """Fill outcome and problems of ``res`` from the verify answer (module doc)."""
    res.outcome = _outcome(answer)
    if answer is not None:
        res.message = str(answer.get("message", ""))[:400]
        res.method = str(answer.get("method", ""))
        res.time_s = round(float(answer.get("time_s", res.wall_s)), 3)
    if res.outcome == "killed" or res.time_s > timeout + OVERRUN_S:
        res.problems.append(f"overrun: answered after {max(res.time_s, res.wall_s):.2f} s "
                            f"(timeout {timeout:g} s, outcome {res.outcome})")
    if res.outcome == "sat":
        x = (answer or {}).get("x")
        res.cex_check = ("invalid: no counterexample" if x is None else check_counterexample(
            case.net.onnx_bytes, case.net.input_shape, case.parts, x))
        if res.cex_check.startswith("invalid"):
            res.problems.append(f"disagreement: sat, counterexample {res.cex_check}")
    if res.outcome == "unsat" and res.sampled_inside >= 0:
        res.problems.append(f"disagreement: unsat, sampling violates by {res.sampled_inside:.3g}"
                            " at a float32 point inside a box")
    elif res.outcome == "unsat" and res.sampled_hull > HULL_MARGIN:
        res.problems.append(f"disagreement: unsat, a point within one ulp of a pinned box "
                            f"violates by {res.sampled_hull:.3g}")
    if "internal error" in res.message:
        res.problems.append(f"internal-error: {res.message[:200]}")
    if (res.outcome in ("refused", "unknown", "timeout") and res.import_status == "ok"
            and re.search(r"ModelMismatchError|disagrees with onnxruntime", res.message)):
        res.problems.append(f"mismatch-refusal: {res.message[:200]} (our comparison: "
                            f"{res.import_message})")
    if res.outcome == "refused" and not refusal_is_clear(
            res.message, model_op_types(case.net.onnx_bytes)):
        res.problems.append(f"unclear-refusal: {res.message[:200]}")


def new_result(case: UnusualCase) -> UnusualResult:
    return UnusualResult(case.case_id, list(case.net.ops), case.spec_kind, case.placement,
                         case.gz, case.net.arch, case.net.n_in, case.n_disjuncts)


def run_unusual_case(case: UnusualCase, worker: TaskWorker | None, timeout: float,
                     workdir: Path | None = None) -> tuple[UnusualResult, TaskWorker]:
    """Sample, import-check and verify one case; returns the result and the (possibly fresh)
    worker to use next (a killed worker is replaced)."""
    res = new_result(case)
    sampled = sample_case(case)
    res.sampled_inside, res.sampled_hull = sampled.best["inside"], sampled.best["hull"]
    pts, ys = sampled.points, sampled.outputs
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        model_path, spec_path = write_case(case, Path(tmp))
        worker = worker if worker is not None and worker.alive() else TaskWorker()
        imp, _ = worker.run("import_check", IMPORT_LIMIT_S, model_path=str(model_path),
                            points=pts.tolist(), ref=ys.tolist())
        if imp is None:
            worker = TaskWorker()
            imp = {"status": "killed", "message": f"import took over {IMPORT_LIMIT_S:g} s"}
        res.import_status, res.import_message = imp["status"], str(imp.get("message", ""))[:300]
        if res.import_status in ("mismatch", "crash", "killed"):
            res.problems.append(f"import-{res.import_status}: {res.import_message}")
        if not worker.alive():
            worker = TaskWorker()
        t0 = time.monotonic()
        answer, _ = worker.run("verify", timeout + GRACE_S, model_path=str(model_path),
                               spec_path=str(spec_path), timeout=timeout)
        res.wall_s = round(time.monotonic() - t0, 3)
        if answer is None or not worker.alive():
            worker = TaskWorker()
    if answer is not None and answer.get("status") == "unsat":
        search_violation(case, sampled, res)
    judge(case, res, answer, timeout)
    noticed = res.outcome == "refused" or "disagrees with onnxruntime" in res.message
    if res.import_status == "mismatch" and noticed:  # the verifier's own check caught it
        res.problems = [p for p in res.problems if not p.startswith("import-mismatch")]
    return res, worker
