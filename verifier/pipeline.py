"""verify(model, spec, config) -> VerificationResult: the public entry point.

Stages: import and check the model, falsify (attack), bound each input region (CROWN, then
alpha-CROWN), then branch-and-bound on what is left. Each stage either settles the answer or
hands on. ``unsat`` needs every disjunct of every region refuted by a sound bound; ``sat`` needs
a counterexample that onnxruntime confirms.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from verifier.config import VerifyConfig
from verifier.errors import NncertError, SpecError
from verifier.onnx_import.loader import ImportedModel, load_model
from verifier.result import VerificationResult
from verifier.spec.types import Spec

log = logging.getLogger(__name__)

# Inputs up to this size are verified by splitting the input box.
INPUT_SPLIT_MAX_INPUTS = 16


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise NncertError("--device cuda was requested but no CUDA device is available")
    return device


def load_inputs(model, spec) -> tuple[ImportedModel, Spec]:
    if isinstance(model, str | Path):
        model = load_model(model)
    if isinstance(spec, str | Path):
        from verifier.spec import load_spec

        spec = load_spec(spec)
    check_spec_matches(model, spec)
    return model, spec


def check_spec_matches(model: ImportedModel, spec: Spec) -> None:
    n_in = sum(math.prod(t.shape) for t in model.graph.inputs)
    n_out = sum(math.prod(t.shape) for t in model.graph.outputs)
    if spec.n_inputs != n_in:
        raise SpecError(f"spec declares {spec.n_inputs} input variables, the model has {n_in}")
    if spec.n_outputs != n_out:
        raise SpecError(f"spec declares {spec.n_outputs} output variables, the model has {n_out}")


def verify(model, spec, config: VerifyConfig | None = None, progress=None) -> VerificationResult:
    """Verify ``spec`` on ``model`` (paths or loaded objects). Raises NncertError on bad input.

    ``progress``: optional callable receiving branch-and-bound progress events (dicts).
    """
    config = config or VerifyConfig()
    start = time.monotonic()
    deadline = start + config.timeout
    model, spec = load_inputs(model, spec)
    device = resolve_device(config.device)
    if config.check_model:
        from verifier.onnx_import.check import differential_check

        differential_check(model, spec, seed=config.seed)
    if not spec.regions:
        result = VerificationResult("unsat", method="spec", message="every input box is empty")
    else:
        from verifier.strategy import run_methods

        result = run_methods(model, spec, config, device, deadline, progress)
    return VerificationResult(
        verdict=result.verdict,
        counterexample=result.counterexample,
        time_s=time.monotonic() - start,
        method=result.method,
        message=result.message,
        stats=result.stats,
    )
