"""Random small ONNX models built from the ops that newer VNN-COMP entries use and the 2021 dev
set lacks (ConvTranspose, Resize, Sign, Where/Equal, Floor, Pow, Sin/Cos, Gather/Slice/Concat/
Split, ReduceMean/ReduceSum, Softmax, BatchNormalization, LeakyRelu, ArgMax, OneHot, ScatterND,
Range, NHWC Transpose, Cast).

``random_unusual_net(rng)`` draws an input layout (vector, NCHW image or NHWC image), one or two
image blocks (for images), a few vector blocks, and a final Gemm to 2-4 outputs. Each block
exercises one op family and records the ONNX op types it *features* (the campaign reports per
featured op; glue such as Gemm, Flatten, Reshape is not featured). Weights are scaled so values
stay O(1). Everything is drawn from ``rng``: same generator state, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fuzzing.unusual_blocks import I64, IMAGE_BLOCKS, VECTOR_BLOCKS
from fuzzing.unusual_blocks import batch_norm as blocks_batch_norm

OPSET = 13
LARGE_SHARE = 0.12
F32 = np.float32


@dataclass(frozen=True)
class UnusualNet:
    """An ONNX model with one float input ``x`` and one float output ``y`` of shape [1, n_out]."""

    onnx_bytes: bytes
    input_shape: tuple[int, ...]
    n_out: int
    ops: tuple[str, ...]  # featured ONNX op types, in order of appearance (unique)
    arch: str

    @property
    def n_in(self) -> int:
        return int(np.prod(self.input_shape))


@dataclass
class Builder:
    """Collects nodes and initializers; ``cur``/``shape`` is the tensor the next block reads."""

    rng: np.random.Generator
    cur: str = "x"
    shape: tuple[int, ...] = ()
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    count: int = 0
    width: int = 8  # widest hidden Gemm; larger models stress deadlines, not soundness
    opset: int = OPSET  # raised by blocks whose op is newer (GridSample: 16)

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value, dtype=F32) -> str:
        name = self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], featured: bool = True, **attrs) -> str:
        """Append a node; its output name is returned. ``featured``: count the op as tested."""
        out = self.fresh(op.lower() + "_")
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        if featured and op not in self.ops:
            self.ops.append(op)
        return out

    def set(self, name: str, shape: tuple[int, ...]) -> None:
        self.cur, self.shape = name, tuple(int(s) for s in shape)

    def gemm(self, n_out: int, scale: float = 1.0) -> None:
        """Dense layer on a [1, n] tensor (glue, not featured)."""
        n_in = self.shape[1]
        w = (self.rng.normal(size=(n_out, n_in)) * scale / np.sqrt(n_in)).astype(F32)
        b = (self.rng.normal(size=n_out) * 0.2).astype(F32)
        out = self.node("Gemm", [self.cur, self.const(w), self.const(b)], False, transB=1)
        self.set(out, (1, n_out))

    def flatten(self) -> None:
        if len(self.shape) != 2:
            self.set(self.node("Flatten", [self.cur], False, axis=1),
                     (1, int(np.prod(self.shape[1:]))))


def _input_layout(b: Builder, large: bool, image: bool) -> tuple[int, ...]:
    """Draw the input shape (``image``: an image one); an NHWC input is transposed to NCHW
    first (featured)."""
    r = b.rng.random()
    if image:
        r = 0.4 + 0.6 * r
    if r < 0.4:
        shape = (1, int(b.rng.integers(48, 257) if large else b.rng.integers(3, 13)))
        b.set("x", shape)
        b.parts.append(f"vec{shape[1]}")
        return shape
    c, hw = int(b.rng.integers(1, 3)), int(b.rng.integers(2, 5))
    if large:
        c, hw = 3, int(b.rng.integers(8, 17))
    if r < 0.75:
        b.set("x", (1, c, hw, hw))
        b.parts.append(f"img{c}x{hw}x{hw}")
        return (1, c, hw, hw)
    b.set("x", (1, hw, hw, c))
    b.set(b.node("Transpose", ["x"], perm=[0, 3, 1, 2]), (1, c, hw, hw))
    b.parts.append(f"nhwc{hw}x{hw}x{c}")
    return (1, hw, hw, c)


def _pick(b: Builder, blocks: dict, fits) -> str:
    names = [n for n, (_, ok) in blocks.items() if fits(ok)]
    name = str(b.rng.choice(names))
    blocks[name][0](b)
    b.parts.append(name)
    return name


# Reductions whose axes moved from an attribute to an input at opset 18 (ReduceSum at 13).
_AXES_INPUT_AT_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                     "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare")
# GridSample's mode names from opset 20 on.
_GRID_MODES_AT_20 = {b"bilinear": b"linear", b"bicubic": b"cubic"}


def _to_opset(b: Builder, opset: int) -> None:
    """Blocks write their nodes in the form of their own opset; where another block raised
    the model's opset, the forms that changed take the newer one: reductions' ``axes``
    become an input (18), GridSample's modes are renamed (20)."""
    for node in b.nodes:
        if opset >= 18 and node.op_type in _AXES_INPUT_AT_18:
            axes = [a for a in node.attribute if a.name == "axes"]
            if axes:
                node.attribute.remove(axes[0])
                node.input.append(b.const(list(axes[0].ints), I64))
        if opset >= 20 and node.op_type == "GridSample":
            for a in node.attribute:
                if a.name == "mode":
                    a.s = _GRID_MODES_AT_20.get(a.s, a.s)


def _to_proto(b: Builder, input_shape: tuple[int, ...], opset: int | None = None
              ) -> onnx.ModelProto:
    opset = b.opset if opset is None else opset
    _to_opset(b, opset)
    graph = helper.make_graph(
        b.nodes, "unusual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(b.cur, TensorProto.FLOAT, list(b.shape))], b.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="nncert-unusual-fuzz")
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _forced_blocks(b: Builder, blocks: tuple[str, ...]) -> None:
    for name in blocks:
        table = IMAGE_BLOCKS if name in IMAGE_BLOCKS else VECTOR_BLOCKS
        if table is IMAGE_BLOCKS and (len(b.shape) != 4 or not table[name][1](b.shape)):
            raise ValueError(f"block {name!r} does not fit a {b.shape} tensor")
        if table is VECTOR_BLOCKS:
            b.flatten()
            if b.shape[1] > 3 * b.width:
                b.gemm(b.width)
        table[name][0](b)
        b.parts.append(name)


def _random_blocks(b: Builder) -> None:
    if len(b.shape) == 4:
        for _ in range(int(b.rng.integers(1, 3))):
            _pick(b, IMAGE_BLOCKS, lambda ok: ok(b.shape))
    b.flatten()
    for _ in range(int(b.rng.integers(1, 4))):
        if b.shape[1] > 3 * b.width or b.rng.random() < 0.5:
            b.gemm(int(b.rng.integers(3, b.width + 1)))
        _pick(b, VECTOR_BLOCKS, lambda ok: ok(b.shape))


def random_upsample_net(rng: np.random.Generator) -> UnusualNet:
    """An opset-9 model with Upsample (removed from later opsets, still in older generator
    networks): image -> Upsample x2 (nearest) -> BatchNormalization -> LeakyRelu -> Gemm."""
    b = Builder(rng)
    c, hw = int(rng.integers(1, 3)), int(rng.integers(2, 5))
    b.set("x", (1, c, hw, hw))
    up = b.node("Upsample", ["x", b.const([1.0, 1.0, 2.0, 2.0])], mode="nearest")
    b.set(up, (1, c, 2 * hw, 2 * hw))
    blocks_batch_norm(b)
    b.flatten()
    b.gemm(int(rng.integers(2, 5)))
    proto = _to_proto(b, (1, c, hw, hw), opset=9)
    return UnusualNet(proto.SerializeToString(), (1, c, hw, hw), b.shape[1], tuple(b.ops),
                      f"opset9 img{c}x{hw}x{hw} upsample batchnorm")


def random_unusual_net(rng: np.random.Generator, blocks: tuple[str, ...] = (),
                       large_share: float = LARGE_SHARE) -> UnusualNet:
    """A random model (see module doc). ``blocks`` forces these vector/image blocks (tests;
    ValueError when an image block does not fit the drawn input).
    A share ``large_share`` is larger (inputs of 48-768 values, hidden width 16-64)."""
    large = bool(rng.random() < large_share)
    b = Builder(rng, width=int(rng.integers(16, 65)) if large else 8)
    input_shape = _input_layout(b, large, any(name in IMAGE_BLOCKS for name in blocks))
    if blocks:
        _forced_blocks(b, blocks)
    else:
        _random_blocks(b)
    b.flatten()
    b.gemm(int(rng.integers(2, 5)))
    proto = _to_proto(b, input_shape)
    return UnusualNet(proto.SerializeToString(), input_shape, b.shape[1], tuple(b.ops),
                      ("large " if large else "") + " ".join(b.parts))
