"""ONNX-level model composition (products of models on shared inputs, graph rewriting).

* ``product.product_model``: several models on shared inputs as one model (the gate's and the
  several-network queries' product graph).
* VNN-LIB 2.0 queries beyond one box and one output tensor (``run.verify_query``): hidden
  tensors become outputs, several input tensors one flat input, several output tensors and
  several networks one flat output; constraints over inputs or products of variables become
  linear constraints on derived outputs (``verifier.spec.layout``). The bound engine, attacks,
  branch and bound and MILP run unchanged on the composed model; counterexamples are
  re-checked on the original networks (``check``).

Nothing is imported here, so that importing ``product`` stays light.
"""
