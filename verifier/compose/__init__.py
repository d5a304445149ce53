"""VNN-LIB 2.0 queries beyond one box and one output: rewritten at the ONNX level.

Hidden tensors become outputs, several input tensors one flat input, several output tensors
(and several networks, joined by ``product.product_model``) one flat output; constraints over
inputs or products of variables become linear constraints on derived outputs
(``verifier.spec.layout``). The bound engine, attacks, branch and bound and MILP run unchanged
on the composed model; counterexamples are re-checked on the original networks.
"""

from verifier.compose.run import QueryResult, needs_composition, verify_query

__all__ = ["QueryResult", "needs_composition", "verify_query"]
