"""Run one fuzz case: the MILP oracle against every ``nncert verify`` method.

Ground truth (``truth``), or a skip with its reason:

1. The oracle is ``milp_verify`` (HiGHS, float32 rounding allowance) on the case's ReLU twin
   (the model itself for ReLU-only nets). ``unknown``/``timeout``: skip (``oracle-unsure``).
2. Float32 ambiguity: the real-arithmetic optimum T of the property (see cases.py) is known up
   to ``margin_err``. A case with ``|T| <= BAND_REL * unit + margin_err`` lies so close to the
   boundary that float32 rounding (order of summation, the twin's different rounding) can
   decide it: skip (``ambiguous``). The generator never places ``near`` cases inside the band
   (|s| >= 1e-4 unit against a band of 1e-5 unit), so this mostly catches ``raw`` cases.
3. Outside the band, the oracle must agree with sign(T) (else the oracle itself is reported,
   ``oracle-inconsistent``), and an oracle ``sat`` must come with a counterexample that an
   independent onnxruntime check accepts *on the model under test* (for a mixed net this is
   where the twin's rounding could differ; a failure is ``oracle-unsure``).

A method *disagrees* when it answers ``sat`` or ``unsat`` against the truth, when its ``sat``
counterexample fails the independent check (box and condition from the generator's own arrays,
not the parsed spec; outputs from a fresh onnxruntime session), or when it answers ``unsat``
while any counterexample for the case was validated. ``unknown``/``timeout`` never disagree;
``error`` is counted and reported separately.
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fuzzing.cases import Case, load_bytes, ort_outputs
from fuzzing.oracle import milp_oracle
from verifier.config import METHODS

log = logging.getLogger(__name__)

BAND_REL = 1e-5
ORACLE_TIME_S = 60.0
ATTACK_SHARE = 0.02
ATTACK_TIMEOUT_S = 0.5


@dataclass
class CaseResult:
    case_id: str
    kind: str
    arch: str
    margin: float
    oracle: str
    truth: str | None  # sat | unsat | None (skipped)
    skip: str = ""
    verdicts: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)
    seconds: float = 0.0


def check_counterexample(case: Case, x: np.ndarray) -> bool:
    """Independent re-check: x (float32 values) lies in one of the generator's boxes exactly
    and the onnxruntime output of the model under test satisfies the generator's condition."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size != case.net.n_in or not np.all(np.isfinite(x)):
        return False
    if not np.array_equal(x, x.astype(np.float32).astype(np.float64)):
        return False  # onnxruntime would run on a rounded input
    if not any(np.all(x >= lo) and np.all(x <= hi) for lo, hi in case.prop.boxes):
        return False
    y = ort_outputs(case.net.onnx_bytes, x[None], case.net.input_shape)[0]
    return bool(np.any(np.all(case.prop.coef @ y <= case.prop.rhs, axis=1)))


def _oracle_truth(case: Case, spec, res: CaseResult) -> tuple[str | None, bool]:
    """(truth or None, whether the oracle's counterexample validated); fills res.skip."""
    twin = load_bytes(case.net.oracle_bytes, "fuzz-twin")
    verdict, cex = milp_oracle(twin, spec, time.monotonic() + ORACLE_TIME_S)
    res.oracle = verdict
    cex_ok = verdict == "sat" and check_counterexample(case, cex.x)
    band = BAND_REL * case.unit + case.margin_err
    expected = "sat" if case.margin <= 0 else "unsat"
    if verdict not in ("sat", "unsat"):
        res.skip = "oracle-unsure"
        return None, False
    if abs(case.margin) <= band:
        res.skip = "ambiguous"
        return None, cex_ok
    if verdict != expected:
        res.disagreements.append(f"milp-oracle: {verdict} but the exact optimum is "
                                 f"{case.margin:.3e} ({expected})")
        return None, cex_ok
    if verdict == "sat" and not cex_ok:
        if case.net.oracle_bytes != case.net.onnx_bytes:  # the twin rounds differently
            res.skip = "oracle-unsure"
            return None, False
        res.disagreements.append("milp-oracle: counterexample fails the independent check")
        return None, False
    return verdict, cex_ok


def method_config(method: str, timeout: float, first: bool):
    """The ``VerifyConfig`` of one method run. ``first``: the run that loads the files and does
    the differential check (the later runs reuse the loaded model: same bytes, same check).

    The opening attack is the same code for every method but ``attack``; ``auto`` keeps the
    default share, the others a small one (ATTACK_SHARE), so their own stages (bounds, BaB,
    MILP) answer more of the cases instead of repeating the attack."""
    from verifier.config import AttackConfig, VerifyConfig

    attack = AttackConfig() if method in ("auto", "attack") else AttackConfig(
        time_share=ATTACK_SHARE)
    return VerifyConfig(timeout=method_timeout(method, timeout), method=method, device="cpu",
                        seed=0, check_model=first, attack=attack,
                        milp_backend="gurobi" if method == "milp" else "auto")


def method_timeout(method: str, timeout: float) -> float:
    """The attack method searches until its deadline on every ``unsat`` case; it gets at most
    ATTACK_TIMEOUT_S (counterexamples of these small nets are found in well under that)."""
    return min(timeout, ATTACK_TIMEOUT_S) if method == "attack" else timeout


def _run_method(model, spec, method: str, timeout: float, first: bool):
    from verifier.pipeline import verify

    return verify(model, spec, method_config(method, timeout, first))


def _backends(stats: dict) -> str:
    """Which MILP backends solved (the ``milp`` method's Gurobi vs the HiGHS oracle)."""
    used = {s.get("backend") for v in stats.values() if isinstance(v, dict)
            for s in v.get("solves", [])}
    return f"[{','.join(sorted(b for b in used if b))}]" if used else ""


def run_case(case: Case, methods=METHODS, timeout: float = 3.0,
             workdir: Path | None = None) -> CaseResult:
    """Oracle and methods on one case (files written to ``workdir`` or a temporary folder)."""
    from verifier.spec import parse_vnnlib

    start = time.monotonic()
    res = CaseResult(case.case_id, case.kind, case.net.arch, case.margin, "", None)
    spec = parse_vnnlib(case.vnnlib, f"fuzz-{case.case_id}")
    res.truth, any_cex = _oracle_truth(case, spec, res)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        model_path, spec_path = Path(tmp) / "model.onnx", Path(tmp) / "spec.vnnlib"
        model_path.write_bytes(case.net.onnx_bytes)
        spec_path.write_text(case.vnnlib)
        outcomes = {}
        loaded = None
        for method in methods:
            t0 = time.monotonic()
            try:
                if loaded is None:  # the first run goes through the files
                    out = _run_method(model_path, spec_path, method, timeout, True)
                    loaded = (load_bytes(case.net.onnx_bytes, str(model_path)), spec)
                else:
                    out = _run_method(*loaded, method, timeout, False)
                verdict = out.verdict
                if verdict == "sat":
                    ok = out.counterexample is not None and check_counterexample(
                        case, out.counterexample.x)
                    any_cex |= ok
                    if not ok:
                        res.disagreements.append(f"{method}: sat counterexample fails the "
                                                 "independent onnxruntime check")
                res.notes[method] = out.method + _backends(out.stats)
            except Exception as exc:  # an error is reported, never a silent pass
                verdict = "error"
                res.notes[method] = f"{type(exc).__name__}: {exc}"
                log.debug("case %s method %s:\n%s", case.case_id, method, traceback.format_exc())
            res.verdicts[method] = verdict
            res.times[method] = round(time.monotonic() - t0, 3)
            outcomes[method] = verdict
    for method, verdict in outcomes.items():
        if verdict not in ("sat", "unsat"):
            continue
        if res.truth is not None and verdict != res.truth:
            res.disagreements.append(f"{method}: {verdict}, the oracle says {res.truth}")
        elif verdict == "unsat" and any_cex:
            res.disagreements.append(f"{method}: unsat, but a counterexample validated")
    res.seconds = round(time.monotonic() - start, 3)
    return res


def save_case(case: Case, res: CaseResult, folder: Path) -> Path:
    """Write the case as ONNX + VNN-LIB (+ the twin and the result) for a regression test."""
    import json
    from dataclasses import asdict

    out = Path(folder) / f"case_{case.seed}_{case.index}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(case.net.onnx_bytes)
    if case.net.oracle_bytes != case.net.onnx_bytes:
        (out / "oracle_twin.onnx").write_bytes(case.net.oracle_bytes)
    (out / "spec.vnnlib").write_text(case.vnnlib)
    (out / "result.json").write_text(json.dumps(asdict(res), indent=1, default=str))
    return out
