"""The ONNX package's own backend test models (``onnx/backend/test/data``: models exported
from torch modules and operators, and the "simple" models, sequence ops among them), each
with inputs and expected outputs: every model the importer accepts computes those outputs,
and every refusal is a clear one, from a known list or of an op without a converter (a
converter that starts refusing shows here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from bounds.engine.forward import run_graph
from bounds.registry import UnsupportedOpError
from verifier.errors import ModelError
from verifier.onnx_import.loader import import_proto

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
MODELS = sorted(p.parent for group in ("pytorch-converted", "pytorch-operator", "simple")
                for p in (DATA / group).glob("*/model.onnx"))
# Refused by name: integer inputs used as indices or shapes, a training domain, strings, an
# output that is constant, split sizes read from an input.
REFUSED = {"test_Embedding", "test_Embedding_sparse", "test_expand_shape_model1",
           "test_expand_shape_model2", "test_expand_shape_model3", "test_expand_shape_model4",
           "test_gradient_of_add", "test_gradient_of_add_and_mul", "test_sequence_model6",
           "test_sequence_model8", "test_strnorm_model_monday_casesensintive_lower",
           "test_strnorm_model_monday_casesensintive_nochangecase",
           "test_strnorm_model_monday_casesensintive_upper",
           "test_strnorm_model_monday_empty_output",
           "test_strnorm_model_monday_insensintive_upper_twodim",
           "test_strnorm_model_nostopwords_nochangecase"}


def test_the_onnx_package_ships_its_backend_models():
    assert len(MODELS) >= 100, f"{len(MODELS)} backend test models under {DATA}"


def _all_ops_converted(proto: onnx.ModelProto) -> bool:
    from verifier.onnx_import.loader import all_nodes
    from verifier.onnx_import.registry import CONVERTERS

    keys = {op for op, _ in CONVERTERS.keys()}
    return all((n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}") in keys
               for n in all_nodes(proto.graph.node))


def _tensors(folder: Path, kind: str) -> list[np.ndarray]:
    return [numpy_helper.to_array(onnx.load_tensor(str(p)))
            for p in sorted(folder.glob(f"{kind}_*.pb"))]


@pytest.mark.parametrize("folder", MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_backend_model_matches_its_expected_outputs_or_is_refused_by_name(folder):
    data = (folder / "model.onnx").read_bytes()
    proto = onnx.load_model_from_string(data)
    try:
        model = import_proto(proto, data)
    except (ModelError, UnsupportedOpError) as exc:  # (ConstantOutputError is a ModelError)
        # A model of ops that all have converters must import unless listed (a model a newer
        # onnx package adds, with an op the importer lacks, is refused by name: fine).
        assert folder.name in REFUSED or not _all_ops_converted(proto), f"refused: {exc}"
        assert str(exc)
        return
    initialised = {t.name for t in proto.graph.initializer}
    feeds_names = [v.name for v in proto.graph.input if v.name not in initialised]
    for case in sorted(folder.glob("test_data_set_*")):
        feeds = dict(zip(feeds_names, _tensors(case, "input"), strict=True))
        args = [torch.tensor(np.asarray(feeds[name], dtype=np.float64)).reshape(1, *t.shape)
                for name, t in zip(model.input_names, model.graph.inputs, strict=True)]
        ours = run_graph(model.graph, *args)
        ours = ours if isinstance(ours, (list, tuple)) else [ours]
        for y, expected in zip(ours, _tensors(case, "output"), strict=True):
            y = y.detach().numpy().reshape(-1)
            expected = expected.astype(np.float64).reshape(-1)
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
