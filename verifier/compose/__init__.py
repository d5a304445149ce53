"""ONNX-level model composition (products of models on shared inputs, graph rewriting)."""
