"""verify(model, spec, config) -> VerificationResult: the public entry point.

Stages: import and check the model, falsify (attack), bound each input region (CROWN, then
alpha-CROWN), then branch-and-bound on what is left. Each stage either settles the answer or
hands on. ``unsat`` needs every disjunct of every region refuted by a sound bound; ``sat`` needs
a counterexample that onnxruntime confirms.

A model that onnxruntime runs is always attacked, even when it cannot be bounded: when the
importer refuses it (``OrtModel``: only onnxruntime evaluates it), when our IR disagrees
with onnxruntime, or when the graph holds an op without a bound rule, the whole budget goes
to attacks and the answer is ``sat`` or ``unknown`` with a message naming what stopped the
bounds.

Box semantics (README, "Semantics of real-valued boxes"): bounds are computed over the real
box; attacks search the float32 points nearest to it; a counterexample outside the real box
(only where the box holds no float32 value) is accepted within the VNN-COMP checker's 1e-4,
or not at all with ``config.strict_box``.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from verifier.config import VerifyConfig
from verifier.errors import (
    ConstantOutputError,
    ModelError,
    ModelMismatchError,
    NncertError,
    SpecError,
    UnsupportedOpError,
)
from verifier.load_time import (
    MODEL_BYTES_PER_S,
    SPEC_BYTES_PER_S,
    NoTimeToLoad,
    require_time_to_load,
)
from verifier.memory_guard import is_out_of_memory, out_of_memory_reason, release_memory
from verifier.onnx_import.loader import ImportedModel
from verifier.result import VerificationResult
from verifier.spec.types import Spec
from verifier.validate import VNNCOMP_BOX_TOL, box_tolerance, has_attack_point
from verifier.watchdog import Finished, run_until

log = logging.getLogger(__name__)

# First time slice of an attack-only run's alternation of PGD on the IR and the black-box
# search on onnxruntime (slices double after each pair).
ATTACK_SLICE_S = 1.0

# onnxruntime input element types a VNN-LIB real-valued input can be fed as.
_FLOAT_INPUTS = ("tensor(float)", "tensor(double)")


@dataclass(frozen=True)
class OrtModel:
    """An ONNX model run by onnxruntime only: names and static shapes of its inputs (symbolic
    batch axis set to 1) and outputs, and ``reason``, the importer's refusal."""

    onnx_bytes: bytes
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    onnx_input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    reason: str
    path: str = ""
    constant_output: bool = False  # the importer found every output constant

    @property
    def n_inputs(self) -> int:
        return sum(math.prod(s) for s in self.onnx_input_shapes)

    @property
    def n_outputs(self) -> int:
        return sum(math.prod(s) for s in self.output_shapes)


def refusal_reason(exc: BaseException) -> str:
    """A one-line reason from an importer error (the list of supported ops left out)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, UnsupportedOpError):  # names op, node and why; drop the long op list
        return text.split("; supported:")[0]
    return text


def _static_input_shape(name: str, shape) -> tuple[int, ...] | None:
    """Static shape of an onnxruntime input: a symbolic leading axis becomes 1; None when
    another axis is symbolic (the spec then cannot say how many values the input has)."""
    dims = []
    for axis, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif axis == 0:
            dims.append(1)
        else:
            log.info("input %r has a symbolic axis %d; onnxruntime fallback not possible",
                     name, axis)
            return None
    return tuple(dims)


def _feeds(session, shapes: list[tuple[int, ...]]) -> dict:
    feeds = {}
    for info, shape in zip(session.get_inputs(), shapes, strict=True):
        dtype = np.float64 if info.type == "tensor(double)" else np.float32
        feeds[info.name] = np.zeros(shape, dtype=dtype)
    return feeds


def ort_only_model(data: bytes, label: str, reason: str) -> OrtModel | None:
    """An OrtModel when onnxruntime loads ``data`` and runs it on a zero input with real-valued
    inputs and numeric outputs; None otherwise (the caller then keeps the importer's error)."""
    from verifier.validate import ort_session

    try:
        session = ort_session(data)
    except Exception as exc:  # onnxruntime raises its own exception types
        log.info("onnxruntime cannot load %s either: %s", label or "the model", exc)
        return None
    inputs = session.get_inputs()
    if not inputs or any(i.type not in _FLOAT_INPUTS for i in inputs):
        log.info("%s has an input that is not real-valued", label or "the model")
        return None
    shapes = [_static_input_shape(i.name, i.shape) for i in inputs]
    if any(s is None for s in shapes):
        return None
    names = [o.name for o in session.get_outputs()]
    try:
        outs = session.run(names, _feeds(session, shapes))
    except Exception as exc:  # noqa: BLE001  (any failure means: onnxruntime cannot run it)
        log.info("onnxruntime cannot run %s: %s", label or "the model", exc)
        return None
    if any(not np.issubdtype(np.asarray(o).dtype, np.number) for o in outs):
        log.info("%s has a non-numeric output", label or "the model")
        return None
    return OrtModel(data, tuple(i.name for i in inputs), tuple(names), tuple(shapes),
                    tuple(tuple(np.asarray(o).shape) for o in outs), reason, label)


def load_runnable_model(path, n_inputs: int | None = None) -> object:
    """The imported model (``ImportedModel``) when the importer takes it, else an OrtModel
    when onnxruntime runs it; otherwise the importer's error is raised (bad input).
    ``n_inputs``: the spec's input count, which fixes a symbolic sequence-length dimension."""
    from verifier.onnx_import.fold import FoldTooLarge
    from verifier.onnx_import.loader import import_proto, read_model_proto
    from verifier.onnx_import.symbolic_axes import pin_symbolic_axes

    proto, data = read_model_proto(path)  # unreadable or malformed files: raised here
    if n_inputs is not None and pin_symbolic_axes(proto, n_inputs, str(path)):
        data = proto.SerializeToString()  # onnxruntime sessions see the same static shape
    try:
        return import_proto(proto, data, str(path))
    except FoldTooLarge:
        raise  # onnxruntime would build the same tensor: refused, not handed to it
    except (ModelError, UnsupportedOpError) as exc:
        fallback = ort_only_model(data, str(path), refusal_reason(exc))
        if fallback is None:
            raise
        if isinstance(exc, ConstantOutputError):
            return replace(fallback, constant_output=True)
        log.warning("the importer refused %s (%s); onnxruntime runs it, so it is attacked "
                    "but not bounded", path, fallback.reason)
        return fallback


def resolve_device(device: str, model=None, spec: Spec | None = None) -> str:
    """The device the engines run on: ``cpu`` or ``cuda`` as asked (``cuda`` must exist);
    ``auto`` follows ``verifier.device_choice`` (the GPU only where one bound pass of this
    model and spec is estimated several times faster there)."""
    import torch

    from verifier.device_choice import choose_device

    if device == "cuda" and not torch.cuda.is_available():
        raise NncertError("--device cuda was requested but no CUDA device is available")
    graph = model.graph if isinstance(model, ImportedModel) else None
    rows = max((r.condition.coef.shape[0] * r.condition.coef.shape[1]
                for r in spec.regions), default=1) if spec is not None else 1
    return choose_device(device, graph, rows)


def load_inputs(model, spec, deadline: float | None = None) -> tuple[ImportedModel | OrtModel,
                                                                   Spec]:
    """Load paths (a model the importer refuses but onnxruntime runs becomes an OrtModel).
    ``deadline``: raise NoTimeToLoad rather than start a read it leaves too little time for."""
    if isinstance(spec, str | Path):  # first: its input count fixes symbolic model axes
        from verifier.spec import load_spec

        _require_time_to_load(spec, "the spec", SPEC_BYTES_PER_S, deadline)
        spec = load_spec(spec)
    if isinstance(model, str | Path):
        _require_time_to_load(model, "the model", MODEL_BYTES_PER_S, deadline)
        model = load_runnable_model(model, spec.n_inputs)
    check_spec_matches(model, spec)
    return model, spec


def _require_time_to_load(path, what: str, bytes_per_s: float, deadline: float | None) -> None:
    if deadline is not None:
        require_time_to_load(path, what, bytes_per_s, deadline, time.monotonic())


def model_sizes(model: ImportedModel | OrtModel) -> tuple[int, int]:
    """Number of flattened input and output values of the model."""
    if isinstance(model, OrtModel):
        return model.n_inputs, model.n_outputs
    n_in = sum(math.prod(t.shape) for t in model.graph.inputs)
    n_out = sum(math.prod(t.shape) for t in model.graph.outputs)
    return n_in, n_out


def check_spec_matches(model: ImportedModel | OrtModel, spec: Spec) -> None:
    n_in, n_out = model_sizes(model)
    if spec.n_inputs != n_in:
        raise SpecError(f"spec declares {spec.n_inputs} input variables, the model has {n_in}")
    if spec.n_outputs != n_out:
        raise SpecError(f"spec declares {spec.n_outputs} output variables, the model has {n_out}")


def ops_without_bound_rule(model: ImportedModel) -> list[str]:
    """IR ops (sorted) that the bound engines cannot bound: no rule, or a rule with neither an
    ``ibp`` function nor the monotone trait."""
    from bounds.registry import rules

    registry = rules()
    missing = set()
    for node in model.graph.nodes:
        rule = registry.get(node.op) if node.op in registry else None
        if rule is None or (rule.ibp is None and not rule.traits.monotone):
            missing.add(node.op)
    return sorted(missing)


# Seconds of the timeout kept for finishing after the last stage's deadline (a stage may end
# a few milliseconds past it: the step that noticed the deadline completes).
FINISH_RESERVE_S = 0.05
# Seconds before the timeout at which the watchdog answers for a stage still running.
WATCHDOG_RESERVE_S = 0.01


def verify(model, spec, config: VerifyConfig | None = None, progress=None) -> VerificationResult:
    """Verify ``spec`` on ``model`` (paths or loaded objects). Raises NncertError on bad input.

    ``progress``: optional callable receiving branch-and-bound progress events (dicts).
    """
    config = config or VerifyConfig()
    start = time.monotonic()
    if stage_deadline(start, config.timeout) <= start:  # the watchdog would not even wait
        return _no_time_to_load(NoTimeToLoad(
            f"the timeout of {config.timeout:.3g} s leaves no time to run (stages end "
            f"{start + config.timeout - stage_deadline(start, config.timeout):.3f} s before it)"),
            start, config)
    # The answer comes by the timeout even if a stage overruns (verifier.watchdog).
    cut = threading.Event()

    def gated(event: dict) -> None:  # no progress events from abandoned work
        if not cut.is_set():
            progress(event)

    ran = run_until(start + config.timeout - WATCHDOG_RESERVE_S,
                    lambda: _verify_timed(model, spec, config, start,
                                          gated if progress else None), "nncert-verify")
    if isinstance(ran, Finished):
        return ran.value
    cut.set()
    return VerificationResult(
        verdict="timeout", time_s=time.monotonic() - start, method=config.method,
        message=f"a stage overran the deadline and was abandoned at {ran.where}",
        stats={"abandoned": ran.where})


def _verify_timed(model, spec, config: VerifyConfig, start: float,
                  progress) -> VerificationResult:
    # Stages end a little early: what follows the last one (its bookkeeping, the result)
    # must fit in the timeout too.
    deadline = stage_deadline(start, config.timeout)
    try:
        model, spec = load_inputs(model, spec, deadline)
    except NoTimeToLoad as exc:
        return _no_time_to_load(exc, start, config)
    from bounds.engine.deadline import bound_pass_clock, first_bound_pass_s

    with box_tolerance(0.0 if config.strict_box else VNNCOMP_BOX_TOL), bound_pass_clock(start):
        try:
            result = _verify_loaded(model, spec, config, deadline, progress)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            result = _out_of_memory(exc, config)
        first_pass = first_bound_pass_s()
    stats = dict(result.stats)
    if first_pass is not None:
        # rounded down (to the microsecond): never past the run's own time_s (rounded to the
        # millisecond, a 8.93 ms run reported a 9 ms first pass)
        stats["first_bound_s"] = math.floor(first_pass * 1e6) / 1e6
    if result.counterexample is not None:
        distance = result.counterexample.box_distance
        stats["cex_box_distance"] = distance
        log.info("counterexample validated with box tolerance %.3g (distance outside the "
                 "real box: %.3g)", 0.0 if config.strict_box else VNNCOMP_BOX_TOL, distance)
    return VerificationResult(
        verdict=result.verdict,
        counterexample=result.counterexample,
        time_s=time.monotonic() - start,
        method=result.method,
        message=result.message,
        stats=stats,
    )


def stage_deadline(start: float, timeout: float) -> float:
    """When the stages of a run started at ``start`` must end: a share of the timeout is kept
    for finishing, and at least twice the watchdog's reserve, so that a stage that ends a few
    milliseconds past its deadline still ends before the watchdog gives up on it (with the
    share alone, timeouts under 0.1 s put the watchdog first)."""
    return start + timeout - max(min(FINISH_RESERVE_S, 0.1 * timeout), 2 * WATCHDOG_RESERVE_S)


def _no_time_to_load(exc: NoTimeToLoad, start: float, config: VerifyConfig) -> VerificationResult:
    log.info("answering timeout: %s", exc)
    return VerificationResult("timeout", time_s=time.monotonic() - start, method=config.method,
                              message=str(exc))


def _out_of_memory(exc: BaseException, config: VerifyConfig) -> VerificationResult:
    """``unknown`` naming the allocation that failed (an allocation refused by the process's
    memory cap or the device, never a kill: verifier.memory_guard)."""
    release_memory(resolve_device(config.device) if config.device != "auto" else "cpu")
    reason = out_of_memory_reason(exc)
    log.warning("out of memory: %s", reason)
    return VerificationResult("unknown", method=config.method, message=f"out of memory: {reason}",
                              stats={"out_of_memory": reason})


def _verify_loaded(model, spec: Spec, config: VerifyConfig, deadline: float,
                   progress) -> VerificationResult:
    if not spec.regions:
        return VerificationResult("unsat", method="spec", message="every input box is empty")
    device = resolve_device(config.device, model, spec)
    if isinstance(model, OrtModel) and model.constant_output:
        from verifier.constant_output import decide_constant_output

        return decide_constant_output(model, spec)
    if isinstance(model, OrtModel):
        return attack_only(model, spec, config, device, deadline,
                           f"the importer refused the model: {model.reason}")
    if config.check_model:
        mismatch = _model_mismatch(model, spec, config, deadline)
        if mismatch is not None:
            return attack_only(mismatch[0], spec, config, device, deadline, mismatch[1])
    model = _with_flat_io(model, spec)
    missing = ops_without_bound_rule(model)
    if missing:
        return attack_only(model, spec, config, device, deadline,
                           f"no bound rule for {', '.join(missing)}")
    from bounds.rules.tangents import DomainError
    from verifier.strategy import run_methods

    try:
        return run_methods(model, spec, config, device, deadline, progress)
    except UnsupportedOpError as exc:  # a stage met an op it cannot handle: attack instead
        return attack_only(model, spec, config, device, deadline,
                           f"bounds stopped: {refusal_reason(exc)}")
    except DomainError as exc:  # an interval left an op's domain: no finite bound, no bug
        return attack_only(model, spec, config, device, deadline,
                           f"bounds stopped: {' '.join(str(exc).split())}")
    except NncertError:
        raise
    except Exception as exc:  # noqa: BLE001
        if is_out_of_memory(exc):
            raise  # answered by verify(): unknown, naming the allocation that failed
        return _internal_error(model, spec, config, device, deadline, exc)


def _with_flat_io(model: ImportedModel, spec: Spec) -> ImportedModel:
    """The model with one flat input and output for the stages (``ir.flat_io``; outputs the
    spec does not read left out); onnxruntime keeps its own inputs, which
    ``input_names``/``onnx_input_shapes`` describe."""
    from verifier.ir.flat_io import flat_io

    graph = flat_io(model.graph, spec.read_outputs())
    return model if graph is model.graph else replace(model, graph=graph)


def _internal_error(model, spec: Spec, config: VerifyConfig, device: str, deadline: float,
                    exc: Exception) -> VerificationResult:
    """A bug in a bound stage must not cost the attack: attack for the time left. Logged
    with its traceback and named in the message, so that campaigns still see it; attacks do
    not depend on the bound stages, and a validated sat stays sound."""
    log.error("internal error in the bound stages; attacking for the time left", exc_info=exc)
    result = attack_only(model, spec, config, device, deadline,
                         f"internal error in the bound stages: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}")
    return VerificationResult(result.verdict, result.counterexample, method=result.method,
                              message=result.message,
                              stats={**result.stats, "internal_error": type(exc).__name__})


def _model_mismatch(model: ImportedModel, spec: Spec, config: VerifyConfig, deadline: float):
    """None when the IR agrees with onnxruntime; else (model to attack, reason): an OrtModel
    when onnxruntime runs the model, since our IR cannot be trusted then. Raises the
    mismatch error when onnxruntime cannot run the model on its own either."""
    from verifier.onnx_import.check import differential_check

    try:
        differential_check(model, spec, seed=config.seed, deadline=deadline)
        return None
    except ModelMismatchError as exc:
        reason = f"the imported model disagrees with onnxruntime: {' '.join(str(exc).split())}"
        fallback = ort_only_model(model.onnx_bytes, model.path, reason)
        if fallback is None:
            raise
        log.warning("%s; attacking with onnxruntime only", reason)
        return fallback, reason


def attack_only(model, spec: Spec, config: VerifyConfig, device: str, deadline: float,
                why: str) -> VerificationResult:
    """Spend the whole budget on attacks: ``sat`` or ``unknown`` (saying ``why`` the model was
    not bounded); ``timeout`` only when the deadline had passed before the attacks.

    When the IR runs, PGD on it and the black-box search on onnxruntime alternate in slices
    that double (PGD suits smooth graphs, the black-box search piecewise-constant ones, and
    neither may starve the other); otherwise the black-box search gets all of it.
    """
    from verifier.attack import falsify, falsify_blackbox

    log.info("%s: attacking only", why)
    stats = {"attack_only": why}
    if time.monotonic() >= deadline:
        return VerificationResult("timeout", method="attack", message=why, stats=stats)
    if not any(has_attack_point(r) for r in spec.regions):  # strict mode, pinned off-float32
        return VerificationResult("unknown", method="attack", stats=stats,
                                  message=f"{why}; no input box holds a float32 point")
    ir_runs = isinstance(model, ImportedModel) and _ir_runs(model)
    slice_s = ATTACK_SLICE_S if ir_runs else math.inf
    cex = None
    for turn in itertools.count():
        if cex is not None or time.monotonic() >= deadline:
            break
        seed = config.seed + turn
        if ir_runs and turn % 2 == 0:
            cex = falsify(model, spec, deadline, config.attack, device=device, seed=seed,
                          budget_s=slice_s)
        else:
            cex = falsify_blackbox(model, spec, deadline, seed=seed, budget_s=slice_s)
            slice_s *= 2
    if cex is not None:
        return VerificationResult("sat", cex, method="attack", message=why, stats=stats)
    return VerificationResult("unknown", method="attack", stats=stats,
                              message=f"{why}; no counterexample found")


def _ir_runs(model: ImportedModel) -> bool:
    """True when every IR op has a forward rule (PGD needs to run the graph)."""
    from bounds.registry import rules

    registry = rules()
    return all(node.op in registry for node in model.graph.nodes)
