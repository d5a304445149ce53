"""Verify a composed query: build the composed model, run the pipeline, re-check ``sat``.

``verify_query(query, models, config)`` is what ``nncert verify`` calls for every query that
needs rewriting (``needs_composition``). The pipeline (attacks, bounds, branch and bound, MILP)
runs unchanged on the composed model; a ``sat`` it returns has been validated on the composed
model by onnxruntime, and is then re-checked on the original networks (``check.recheck``) in
float64; if that re-check fails, the answer is ``unknown``, never ``sat``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import onnx

from verifier.compose.bind import static_dims, v1_network
from verifier.compose.build import Composed, compose
from verifier.compose.check import Assignment, recheck
from verifier.errors import ModelError, SpecError, UnsupportedOpError
from verifier.onnx_import.ort import ort_session
from verifier.result import VerificationResult
from verifier.spec.query import NetworkDecl, Query
from verifier.validate import VNNCOMP_BOX_TOL

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class QueryResult:
    """The verification result and, after ``sat``, the checked assignment."""

    result: VerificationResult
    assignment: Assignment | None = None


def needs_composition(query: Query) -> bool:
    """See ``Query.needs_composition``."""
    return query.needs_composition


def _output_shapes(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    """The output shapes onnxruntime computes on a zero input (for VNN-LIB 1.0 layouts)."""
    constants = {t.name for t in model.graph.initializer}
    sess = ort_session(model.SerializeToString())
    feeds = {}
    for vi, info in zip((v for v in model.graph.input if v.name not in constants),
                        sess.get_inputs(), strict=True):
        dtype = np.float64 if info.type == "tensor(double)" else np.float32
        feeds[vi.name] = np.zeros(static_dims(vi), dtype=dtype)
    return [tuple(np.asarray(o).shape) for o in sess.run(None, feeds)]


def networks_of(query: Query, models: dict[str, onnx.ModelProto]) -> list[NetworkDecl]:
    """The declared networks, or for VNN-LIB 1.0 the one network the model implies."""
    if query.info.version == "2.0":
        return list(query.info.networks)
    (model,) = models.values()
    layout = query.layout
    n_in = len(layout.input_index) if layout is not None else query.spec.n_inputs
    n_out = layout.n_values if layout is not None else query.spec.n_outputs
    net = v1_network(model, n_in, n_out, _output_shapes(model))
    models.clear()
    models[net.name] = model
    return [net]


def load_composed(composed: Composed, label: str):
    """The composed model as the pipeline takes it: imported, or run by onnxruntime only."""
    from verifier.onnx_import.loader import import_proto
    from verifier.pipeline import ort_only_model, refusal_reason

    data = composed.proto.SerializeToString()
    try:
        return import_proto(composed.proto, data, label)
    except (ModelError, UnsupportedOpError) as exc:
        fallback = ort_only_model(data, label, refusal_reason(exc))
        if fallback is None:
            raise
        log.warning("the importer refused the composed model (%s); attacking only",
                    fallback.reason)
        return fallback


def verify_query(query: Query, models: dict[str, onnx.ModelProto], config,
                 label: str = "<composed>", progress=None) -> QueryResult:
    """Verify a query that needs composition (``models``: parsed ONNX by network name;
    ``progress`` as for ``pipeline.verify``)."""
    from verifier.pipeline import verify

    if query.layout is None:
        raise SpecError("the query was not parsed for composition (parse_query(compose=True))")
    start = time.monotonic()
    models = dict(models)
    composed = compose(networks_of(query, models), models, query.layout)
    model = load_composed(composed, label)
    # composing counts against the budget (config.timeout was measured before it)
    left = max(config.timeout - (time.monotonic() - start), 0.01)
    result = verify(model, query.spec, config.model_copy(update={"timeout": left}), progress)
    if result.verdict != "sat" or result.counterexample is None:
        return QueryResult(result)
    cex = result.counterexample
    tolerance = 0.0 if config.strict_box else VNNCOMP_BOX_TOL
    found = recheck(list(composed.runners), query.layout, query.spec, cex.x, cex.region,
                    tolerance)
    if found is None:
        log.warning("a counterexample validated on the composed model failed the re-check on "
                    "the original networks; answering unknown")
        return QueryResult(VerificationResult(
            "unknown", time_s=result.time_s, method=result.method, stats=result.stats,
            message="counterexample failed the float64 re-check on the original networks"))
    return QueryResult(result, found)
