"""The composed model of a query: every network on the shared free inputs, one flat output.

``compose(query, models)`` rewrites each declared network (``network.flat_network``), joins
several of them on the shared input with ``verifier.compose.product.product_model``, and adds
the derived outputs of the layout:

* passthroughs: the free inputs a constraint names, copied (Slice/Gather: exact);
* monomials: each a product of base values (declared values or free inputs) computed by Pow
  (a power) and Mul nodes, which the bound engine relaxes soundly as it relaxes any graph op,
  so a polynomial constraint is a linear constraint on these outputs.

The output ``y`` is ``[values of each network..., passthroughs, monomials]``
(``verifier.spec.layout``): the Spec the parser built in compose mode is over exactly this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from verifier.compose.bind import NetworkBinding, bind_network
from verifier.compose.check import NetworkRunner
from verifier.compose.network import Z_NAME, Names, constant, flat_network, take, value_name
from verifier.errors import SpecError
from verifier.onnx_import.loader import opset_of
from verifier.spec.layout import Layout, Monomial
from verifier.spec.query import NetworkDecl

Y_NAME = "nncert_compose/y"


@dataclass(frozen=True, eq=False)
class Composed:
    """The composed ONNX model and what checks its counterexamples."""

    proto: onnx.ModelProto
    runners: tuple[NetworkRunner, ...]
    layout: Layout


def bind_all(networks: list[NetworkDecl],
             models: dict[str, onnx.ModelProto]) -> list[NetworkBinding]:
    """Bind every declared network (in order) to its model; inputs numbered in order."""
    out, offset = [], 0
    for net in networks:
        out.append(bind_network(net, models[net.name], offset))
        offset += sum(t.size for t in net.inputs)
    return out


def compose(networks: list[NetworkDecl], models: dict[str, onnx.ModelProto],
            layout: Layout) -> Composed:
    """The composed model of ``networks`` (``models`` by network name) over ``layout``."""
    bindings = bind_all(networks, models)
    n_declared = sum(t.decl.size for b in bindings for t in b.inputs)
    if n_declared != len(layout.input_index):
        raise SpecError(f"the query declares {len(layout.input_index)} input elements, the "
                        f"networks take {n_declared}")
    runners = [NetworkRunner.of(b) for b in bindings]
    flats = [flat_network(b, layout.input_index, layout.n_z, r.probe())
             for b, r in zip(bindings, runners, strict=True)]
    model = flats[0] if len(flats) == 1 else _join(flats)
    outputs = [value_name(b.decl.name) for b in bindings]
    if len(outputs) > 1 or not layout.trivial:
        _finish(model, outputs, layout)
    return Composed(model, tuple(runners), layout)


def _join(models: list[onnx.ModelProto]) -> onnx.ModelProto:
    """Several rewritten networks on the shared input ``Z_NAME`` as one model."""
    from verifier.compose.product import product_model

    return product_model(models, [f"n{i}_" for i in range(len(models))], TensorProto.FLOAT)


def _finish(model: onnx.ModelProto, outputs: list[str], layout: Layout) -> None:
    """Append the derived outputs and make ``Y_NAME`` (their concatenation) the one output."""
    graph = model.graph
    names = Names(graph, "query")
    opset = opset_of(model)
    pieces, nodes = _resolve(graph, outputs), []
    if layout.passthrough:
        made, name = take(names, Z_NAME, np.asarray(layout.passthrough),
                          (len(layout.passthrough),), opset)
        nodes += made
        pieces.append(name)
    if layout.monomials:
        base = names("base")
        nodes.append(helper.make_node("Concat", [*pieces[:len(outputs)], Z_NAME], [base], axis=0))
        for m in layout.monomials:
            made, name = _monomial(names, base, m, opset)
            nodes += made
            pieces.append(name)
    nodes.append(helper.make_node("Concat", pieces, [Y_NAME], axis=0))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(Y_NAME, TensorProto.FLOAT,
                                                      [layout.n_outputs]))


def _resolve(graph: onnx.GraphProto, outputs: list[str]) -> list[str]:
    """The joined model's output names for the networks' flat outputs, in network order:
    the names themselves, or (after the product renamed them) its outputs in order."""
    present = [vi.name for vi in graph.output]
    if all(o in present for o in outputs):
        return list(outputs)
    if len(present) != len(outputs):
        raise SpecError(f"joining the networks gave {len(present)} outputs for "
                        f"{len(outputs)} networks")
    return present


def _monomial(names: Names, base: str, monomial: Monomial,
              opset: int) -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing prod base[p] ** k over the monomial's (position, power) pairs ([1])."""
    nodes, factors = [], []
    for pos, power in monomial:
        made, name = take(names, base, np.asarray([pos]), (1,), opset)
        nodes += made
        if power > 1:
            const_node, exponent = constant(names, float(power), np.float32)
            powered = names("pow")
            nodes += [const_node, helper.make_node("Pow", [name, exponent], [powered])]
            name = powered
        factors.append(name)
    out = factors[0]
    for f in factors[1:]:
        product = names("mul")
        nodes.append(helper.make_node("Mul", [out, f], [product]))
        out = product
    return nodes, out
