"""``nncert supports --CAPABILITY``: the VNN-LIB 2.0 capability queries.

Each query prints its answer on stdout, one item per line. The operator list comes from the
importer's converter registry (no hand-kept list): every op it converts when an operand depends
on the input (tests/onnx_import/test_supported_ops.py imports and verifies one model per op);
ops whose output shape would depend on input values (Range, ConstantOfShape) fold when constant
but are not listed. Theory names follow the VNN-LIB 2.0 draft:
hidden nodes NH/H, inputs and outputs SIO/MIO, networks SNET/MENET/MINET/MNET, node comparisons
SNC/MNC, arithmetic BND/OUTC/LIN/POLY.

What nncert answers, and why:
* element types ``float32`` and ``real``: counterexamples are re-checked in float32 by
  onnxruntime; ``unsat`` comes from bound propagation in float64 that adds a bound on the
  network's own float32 rounding error at every node (bounds/engine/rounding.py).
* theories: every theory of every set. Queries beyond NH-SNET-SIO-SNC with box inputs and
  linear output constraints are verified on a composed model (verifier/compose, docs/vnnlib.md):
  hidden tensors become outputs (H), several input and output tensors one flat input and
  output (MIO), several networks one product model on the inputs the query equates (MNET, and
  its subsets MENET and MINET: equal-to networks run the named network's model, isomorphic-to
  ones their own), constraints over several inputs or across nodes constraints on inputs
  copied to the output (LIN, MNC), and products of variables Mul/Pow outputs that the bound
  rules relax (POLY, up to degree 8). tests/compose/test_theories.py holds one sat and one
  unsat query per theory.
"""

from __future__ import annotations

CAPABILITIES: dict[str, str] = {
    "onnx-operators": "ONNX operators the importer converts, one per line",
    "onnx-operators-unsat-proofs": "operators supported when producing unsat proofs (none)",
    "onnx-opset-versions": "minimum and maximum ONNX opset version",
    "onnx-element-types": "tensor element types analysed",
    "vnnlib-versions": "minimum and maximum VNN-LIB version",
    "hidden-node-theories": "hidden-node theories (NH, H)",
    "multiple-input-output-theories": "input/output theories (SIO, MIO)",
    "multiple-network-theories": "multiple-network theories (SNET, MENET, MINET, MNET)",
    "multiple-node-comparison-theories": "node-comparison theories (SNC, MNC)",
    "arithmetic-complexity-theories": "arithmetic theories (BND, OUTC, LIN, POLY)",
    "optimised-disjunctive-reasoning": "true if disjunctions are handled without DNF expansion",
    "serialise-assignments": "true if --serialise-assignments is supported",
    "unsat-proofs": "true if unsat proofs can be produced",
    # Booleans of the earlier draft of the interface, kept for tools that still ask them.
    "multiple-input-outputs": "(earlier draft) several ONNX inputs/outputs",
    "hidden-nodes": "(earlier draft) queries about hidden nodes",
    "multiple-networks": "(earlier draft) queries with several networks",
    "multiple-node-comparisons": "(earlier draft) comparisons across nodes",
}

MIN_OPSET = 7  # onnxruntime's oldest supported opset; converters are keyed from opset 1

STATIC_ANSWERS: dict[str, list[str]] = {
    "onnx-operators-unsat-proofs": [],
    "onnx-element-types": ["float32", "real"],
    "vnnlib-versions": ["1.0", "2.0"],
    "hidden-node-theories": ["NH", "H"],
    "multiple-input-output-theories": ["SIO", "MIO"],
    "multiple-network-theories": ["SNET", "MENET", "MINET", "MNET"],
    "multiple-node-comparison-theories": ["SNC", "MNC"],
    "arithmetic-complexity-theories": ["BND", "OUTC", "LIN", "POLY"],
    # Disjunctive output conditions are bounded all at once (stacked), not one DNF term a run.
    "optimised-disjunctive-reasoning": ["true"],
    "serialise-assignments": ["false"],
    "unsat-proofs": ["false"],
    "multiple-input-outputs": ["true"],
    "hidden-nodes": ["true"],
    "multiple-networks": ["true"],
    "multiple-node-comparisons": ["true"],
}


def add_parser(sub, common) -> None:
    p = sub.add_parser("supports", parents=[common], help="report capabilities (VNN-LIB 2.0)",
                       description="Answer one VNN-LIB 2.0 capability query.")
    group = p.add_mutually_exclusive_group(required=True)
    for name, text in CAPABILITIES.items():
        group.add_argument(f"--{name}", dest="capability", action="store_const", const=name,
                           help=text)
    p.set_defaults(run=run)


def answer(capability: str) -> list[str]:
    """The lines printed for one capability."""
    if capability == "onnx-operators":
        from verifier.onnx_import.registry import listed_ops

        return listed_ops()
    if capability == "onnx-opset-versions":
        import onnx.defs

        return [str(MIN_OPSET), str(onnx.defs.onnx_opset_version())]
    return list(STATIC_ANSWERS[capability])


def run(args) -> int:
    for line in answer(args.capability):
        print(line)
    return 0
