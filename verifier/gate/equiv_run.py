"""``nncert gate --reference OLD.onnx --model NEW.onnx``: the equivalence gate, run in-process.

:class:`EquivalenceProblem` holds the merged model (both models on one input, see
:mod:`verifier.gate.equivalence`) and the two original models; :func:`run_equivalence_gate`
verifies every sample's ball on the merged model with :func:`verifier.verify` and returns the
same :class:`~verifier.gate.gate.GateSummary` as the robustness gate, so the thresholds, exit
codes and reports are the same. A sample counts as ``falsified`` only when its counterexample,
already validated by the pipeline on the merged model in onnxruntime, also violates the
property when the two original models run on their own in onnxruntime.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from verifier.config import VerifyConfig
from verifier.errors import ModelError, NncertError
from verifier.gate.data import Dataset, load_inputs
from verifier.gate.equivalence import (
    EquivalenceProperty,
    equivalence_vnnlib,
    merged_model,
    single_output,
    violation,
)
from verifier.gate.gate import _BY_VERDICT, GateSummary, ProgressFn, SampleOutcome, Thresholds
from verifier.gate.specs import BallOptions, input_box

if TYPE_CHECKING:
    from verifier.onnx_import.loader import ImportedModel

log = logging.getLogger(__name__)

_NP_TYPES = {"tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(bfloat16)": None}


@dataclass(frozen=True)
class EquivalenceProblem:
    """The merged model (loaded for the verifier), its bytes and the two original models."""

    prop: EquivalenceProperty
    model_path: str
    merged: ImportedModel  # the merged ONNX model, imported
    merged_bytes: bytes
    reference_bytes: bytes
    model_bytes: bytes
    k: int  # output values per model

    @classmethod
    def load(cls, reference: str, model: str, prop: EquivalenceProperty) -> EquivalenceProblem:
        """Read both files, build and load the merged model. ModelError on bad input."""
        from verifier.onnx_import.loader import import_proto, read_model_proto

        ref_proto, ref_bytes = read_model_proto(reference)
        new_proto, new_bytes = read_model_proto(model)
        _, k = single_output(ref_proto, "reference")
        merged = merged_model(ref_proto, new_proto, prop.mode)
        if _has_float16(ref_proto) or _has_float16(new_proto):
            log.warning("a model computes in float16: bounds are over real arithmetic, so "
                        "float16 rounding inside the model is not covered by a proof "
                        "(the model check refuses it; counterexamples are still exact: "
                        "onnxruntime runs the models)")
        data = merged.SerializeToString()
        imported = import_proto(merged, data, f"{model} vs {reference}", half_precision=True)
        if len(imported.input_names) != 1:
            raise ModelError("the equivalence gate needs models with one input tensor")
        return cls(prop, model, imported, data, ref_bytes, new_bytes, k)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.merged.onnx_input_shapes[0]

    def vnnlib(self, x: np.ndarray, ball: BallOptions, comment: str = "") -> str:
        lower, upper = input_box(x, ball)
        return equivalence_vnnlib(lower, upper, self.prop, self.k, comment)

    def spec(self, x: np.ndarray, ball: BallOptions, name: str = ""):
        from verifier.spec import parse_vnnlib

        return parse_vnnlib(self.vnnlib(x, ball), f"<{name} eps {ball.eps!r}>")

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reference, model) outputs at ``x`` (float32 input), each model run on its own."""
        return (_run(self.reference_bytes, x, self.input_shape),
                _run(self.model_bytes, x, self.input_shape))

    def check(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The two outputs at ``x`` when they violate the property, else None."""
        f, g = self.outputs(x)
        return (f, g) if violation(self.prop, f, g) else None

    def labels(self, dataset_x: np.ndarray) -> np.ndarray:
        """The reference's class (argmax of its output) at each sample."""
        return np.array([int(np.argmax(self.outputs(x)[0])) for x in dataset_x], np.int64)


def _has_float16(model: onnx.ModelProto) -> bool:
    halves = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    return any(t.data_type in halves for t in model.graph.initializer) or any(
        vi.type.tensor_type.elem_type in halves
        for vi in list(model.graph.input) + list(model.graph.output))


def _run(onnx_bytes: bytes, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One model's flattened output (float64) at the float32 point ``x``, in onnxruntime."""
    from verifier.onnx_import.ort import ort_session

    sess = ort_session(onnx_bytes)
    meta = sess.get_inputs()[0]
    dtype = _NP_TYPES.get(meta.type, np.float32)
    if dtype is None:
        raise ModelError(f"input type {meta.type} cannot be fed from numpy")
    x32 = np.asarray(x, dtype=np.float32).reshape(shape)
    out = sess.run(None, {meta.name: x32.astype(dtype)})[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def equivalence_dataset(problem: EquivalenceProblem, path: str, limit: int | None) -> Dataset:
    """The samples of ``path`` (labels, when given, are not used), labelled with the
    reference's class at each sample."""
    x, names = load_inputs(path, problem.input_shape)
    if limit is not None:
        x, names = x[:limit], names[:limit]
    return Dataset(x, problem.labels(x), names)


def run_equivalence_gate(problem: EquivalenceProblem, dataset: Dataset, ball: BallOptions,
                         thresholds: Thresholds, config: VerifyConfig, data_label: str = "",
                         progress: ProgressFn | None = None) -> GateSummary:
    """Verify the property on every sample's ball; the summary, as ``run_gate`` returns it."""
    summary = GateSummary(problem.model_path, data_label, ball, thresholds,
                          equivalence=problem.prop)
    start = time.monotonic()
    if config.check_model:  # once, outside the first sample's time budget
        from verifier.onnx_import.check import differential_check

        differential_check(problem.merged, problem.spec(dataset.x[0], ball), seed=config.seed)
    config = config.model_copy(update={"check_model": False})
    for i in range(len(dataset)):
        outcome = verify_equivalence_sample(problem, dataset, i, ball, config)
        summary.samples.append(outcome)
        if progress is not None:
            progress(i + 1, len(dataset), outcome)
    summary.total_time_s = time.monotonic() - start
    return summary


def verify_equivalence_sample(problem: EquivalenceProblem, dataset: Dataset, i: int,
                              ball: BallOptions, config: VerifyConfig) -> SampleOutcome:
    """Verify one sample's ball on the merged model and map the verdict to an outcome."""
    from verifier.pipeline import verify

    name, label = dataset.names[i], int(dataset.y[i])
    t0 = time.monotonic()
    try:
        res = verify(problem.merged, problem.spec(dataset.x[i], ball, name), config)
    except NncertError:
        raise
    except Exception as exc:  # noqa: BLE001 - one sample's internal failure must not hide others
        log.warning("sample %d: internal error: %s", i, exc, exc_info=True)
        return SampleOutcome(i, name, label, "error", time.monotonic() - t0,
                             message=f"{type(exc).__name__}: {exc}")
    outcome = _BY_VERDICT.get(res.verdict, "error")
    if outcome != "falsified":
        return SampleOutcome(i, name, label, outcome, res.time_s, res.method, res.message)
    return falsified_outcome(problem, i, name, label, res.counterexample.x, res.time_s,
                             res.method, res.message)


def falsified_outcome(problem: EquivalenceProblem, i: int, name: str, label: int,
                      x: np.ndarray, time_s: float, method: str, message: str) -> SampleOutcome:
    """``falsified`` with both models' outputs when the two models, run on their own,
    confirm the violation at ``x``; otherwise ``unknown`` (never an unconfirmed refutation)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    checked = problem.check(x)
    if checked is None:
        log.warning("sample %d: counterexample not confirmed by the two models run on their "
                    "own", i)
        return SampleOutcome(i, name, label, "unknown", time_s, method,
                             "counterexample valid on the merged model but not confirmed by "
                             "the two models run on their own (float rounding at the boundary)")
    f, g = checked
    return SampleOutcome(i, name, label, "falsified", time_s, method, message, x, g, f)
