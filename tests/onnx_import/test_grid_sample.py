"""GridSample (verifier/onnx_import/converters/grid_sample.py): a constant grid becomes a
Gather and a weighted sum read off onnxruntime, an input-dependent grid IR GridSample
(bounds/rules/grid_sample.py); both agree with onnxruntime for every mode, padding and corner
convention, under both opsets' mode names; unsupported uses are refused by name; a spatial
transformer gets IBP and CROWN bounds that hold at onnxruntime's values and a verdict."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from bounds.engine.deadline import engine_deadline
from bounds.engine.spec_bounds import BoundOptions, bound_spec
from bounds.types import Interval
from tests.onnx_import.onnx_util import compare, make_model, one_node, ort_outputs, rand
from verifier.errors import ModelError, UnsupportedOpError
from verifier.onnx_import.loader import import_proto

IMG = {"x": (1, 2, 5, 6)}
NAMES = {16: {"linear": "bilinear", "nearest": "nearest", "cubic": "bicubic"},
         20: {"linear": "linear", "nearest": "nearest", "cubic": "cubic"}}
PADDINGS = ("zeros", "border", "reflection")


def _import(model: onnx.ModelProto):
    data = model.SerializeToString()
    return import_proto(onnx.load_model_from_string(data), data)


def _const_grid(mode: str, padding: str, align: int, opset: int, n: int = 1,
                grid=None) -> onnx.ModelProto:
    inputs = {"x": (n, 2, 5, 6)}
    grid = rand(n, 4, 3, 2, low=-1.3, high=1.3, seed=7) if grid is None else grid
    return one_node("GridSample", inputs, {"g": grid}, opset=opset,
                    mode=NAMES[opset][mode], padding_mode=padding, align_corners=align)


def _input_grid(mode: str, padding: str, align: int, opset: int) -> onnx.ModelProto:
    """Image and grid both model inputs (the grid's values reach past the image)."""
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode=NAMES[opset][mode],
                            padding_mode=padding, align_corners=align)
    return make_model([node], {"x": (1, 2, 5, 6), "g": (1, 4, 3, 2)}, ["y"], opset=opset)


@pytest.mark.parametrize("mode,padding,align,opset",
                         list(itertools.product(("linear", "nearest", "cubic"), PADDINGS,
                                                (0, 1), (16, 20))))
def test_constant_grid_is_a_weighted_gather(mode, padding, align, opset):
    model = _const_grid(mode, padding, align, opset)
    compare(model, n=6)
    assert "GridSample" not in _import(model).graph.op_types


def test_constant_grid_per_image_of_a_batch():
    grid = np.stack([rand(4, 3, 2, low=-1.3, high=1.3, seed=s) for s in (3, 4)])
    compare(_const_grid("linear", "zeros", 0, 16, n=2, grid=grid), n=4)


def test_constant_grid_on_pixel_centres_and_ties():
    """Coordinates on pixel centres, halfway between them (nearest's ties) and on the edges."""
    xs = np.linspace(-1.0, 1.0, 13, dtype=np.float32)
    grid = np.stack(np.meshgrid(xs, xs[::3]), -1)[None].astype(np.float32)  # [1, 5, 13, 2]
    for mode, align in itertools.product(("linear", "nearest", "cubic"), (0, 1)):
        compare(_const_grid(mode, "zeros", align, 20, grid=grid), n=3)


@pytest.mark.parametrize("mode,padding,align",
                         list(itertools.product(("linear", "nearest"), PADDINGS, (0, 1))))
def test_input_grid_agrees_with_onnxruntime(mode, padding, align):
    model = _input_grid(mode, padding, align, 20)
    compare(model, n=8, low=-1.6, high=1.6, tol=2e-6)
    assert "GridSample" in _import(model).graph.op_types


def test_cubic_at_an_input_grid_is_refused():
    with pytest.raises(UnsupportedOpError, match="cubic mode at an input-dependent grid"):
        _import(_input_grid("cubic", "zeros", 0, 16))


def test_volumetric_sampling_is_refused():
    node = helper.make_node("GridSample", ["x", "g"], ["y"])
    model = make_model([node], {"x": (1, 1, 2, 3, 4), "g": (1, 2, 2, 2, 3)}, ["y"], opset=20)
    with pytest.raises(UnsupportedOpError, match="rank 5"):
        _import(model)


def test_grid_of_the_wrong_shape_is_a_model_error():
    model = one_node("GridSample", IMG, {"g": rand(1, 4, 3, 3)}, opset=16)
    with pytest.raises(ModelError, match="grid shape"):
        _import(model)


def test_unknown_mode_is_a_model_error():
    model = one_node("GridSample", IMG, {"g": rand(1, 4, 3, 2)}, opset=16, mode="area")
    with pytest.raises(ModelError, match="unknown mode 'area'"):
        _import(model)


def _stn() -> onnx.ModelProto:
    """A spatial transformer: theta = 0.3 tanh(W x) + identity, its affine grid over a 4 x 4
    output (Gemm, MatMul with the base grid), then a bilinear sample of the image x."""
    base = np.stack(np.meshgrid(np.linspace(-0.75, 0.75, 4), np.linspace(-0.75, 0.75, 4)),
                    -1).reshape(16, 2)
    base = np.concatenate([base, np.ones((16, 1))], 1).astype(np.float32)  # [16, 3]
    nodes = [helper.make_node("Flatten", ["x"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["t"], transB=1),
             helper.make_node("Tanh", ["t"], ["th"]),
             helper.make_node("Mul", ["th", "k"], ["ts"]),
             helper.make_node("Add", ["ts", "eye"], ["theta"]),
             helper.make_node("Reshape", ["theta", "s23"], ["m"]),  # [1, 2, 3]
             helper.make_node("MatMul", ["base", "mt"], ["pts"]),  # [1, 16, 2]
             helper.make_node("Reshape", ["pts", "sg"], ["g"]),
             helper.make_node("GridSample", ["x", "g"], ["y"], mode="linear")]
    nodes.insert(6, helper.make_node("Transpose", ["m"], ["mt"], perm=[0, 2, 1]))
    inits = {"w": rand(6, 32, seed=5), "k": np.float32(0.3),
             "eye": np.array([[1, 0, 0, 0, 1, 0]], np.float32),
             "s23": np.array([1, 2, 3], np.int64), "base": base[None],
             "sg": np.array([1, 4, 4, 2], np.int64)}
    return make_model(nodes, {"x": (1, 2, 4, 4)}, ["y"], inits, opset=20)


def _bounds_hold(model: onnx.ModelProto, name: str, shape: tuple, centre_range: float,
                 radius: float, methods: tuple[str, ...], seed: int) -> dict[str, float]:
    """Bound every output of ``model`` over a box of ``radius`` around a random centre (input
    ``name`` of ``shape``) by each method; assert the bounds are finite and hold at 64
    onnxruntime values (16 of them at vertices); return each method's mean width."""
    graph = _import(model).graph
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-centre_range, centre_range, (1, *shape)).astype(np.float32)
    lo, hi = centre - np.float32(radius), centre + np.float32(radius)
    points = rng.uniform(lo[0], hi[0], (64, *shape)).astype(np.float32)
    points[:16] = np.where(rng.random(points[:16].shape) < 0.5, lo[0], hi[0])
    values = np.stack([r[0].ravel() for r in ort_outputs(model, [{name: p} for p in points])])
    n_out = values.shape[1]
    eye = torch.eye(n_out, dtype=torch.float64)
    coef = torch.cat([eye, -eye]).unsqueeze(0)
    box = Interval(torch.from_numpy(lo.astype(np.float64)), torch.from_numpy(hi.astype(np.float64)))
    widths = {}
    for method in methods:
        with engine_deadline(None):
            lower = bound_spec(graph, box, coef, torch.zeros(1, 2 * n_out, dtype=torch.float64),
                               BoundOptions(method=method)).lower[0].numpy()
        low, up = lower[:n_out], -lower[n_out:]
        assert np.all(np.isfinite(low)) and np.all(np.isfinite(up)), method
        assert np.all(values >= low) and np.all(values <= up), method
        widths[method] = float(np.mean(up - low))
    return widths


def test_spatial_transformer_bounds_hold_at_onnxruntime_values():
    _bounds_hold(_stn(), "x", (1, 2, 4, 4), 1.0, 0.05, ("ibp", "crown", "alpha"), seed=0)


def test_constant_image_read_at_input_coordinates():
    """A learned 2-D lookup table (constant image) interpolated at coordinates from the input:
    the op with a constant image agrees with onnxruntime and its bounds hold."""
    table = rand(1, 3, 5, 6, seed=9)
    node = helper.make_node("GridSample", ["table", "g"], ["y"], mode="linear",
                            padding_mode="border")
    model = make_model([node], {"g": (1, 2, 2, 2)}, ["y"], {"table": table}, opset=20)
    compare(model, n=8, low=-1.2, high=1.2, tol=2e-6)
    _bounds_hold(model, "g", (1, 2, 2, 2), 0.8, 0.1, ("ibp", "crown"), seed=4)


def test_input_grid_over_a_batch_of_two_images():
    """N = 2 images, each read at its own grid taken from the input: agreement with
    onnxruntime and IBP/CROWN bounds that hold at sampled points."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=0),
             helper.make_node("Slice", ["f", "s0", "s1", "ax"], ["p"]),
             helper.make_node("Reshape", ["p", "sh"], ["g"]),
             helper.make_node("GridSample", ["x", "g"], ["y"], mode="linear")]
    inits = {"s0": np.array([0], np.int64), "s1": np.array([48], np.int64),
             "ax": np.array([1], np.int64), "sh": np.array([2, 4, 3, 2], np.int64)}
    model = make_model(nodes, {"x": (2, 2, 5, 6)}, ["y"], inits, opset=20)
    compare(model, n=3, low=-1.2, high=1.2, tol=2e-6)
    widths = _bounds_hold(model, "x", (2, 2, 5, 6), 1.0, 0.02, ("ibp", "crown"), seed=0)
    assert widths["crown"] < widths["ibp"]
