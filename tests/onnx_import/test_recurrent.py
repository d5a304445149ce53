"""RNN, GRU and LSTM nodes (every direction, initial states constant and
input-dependent, biases, peepholes, clip, GRU's linear_before_reset, LSTM's input_forget,
sequence_lens, other activations) imported and compared with onnxruntime, every output."""

from __future__ import annotations

import pytest
from onnx import helper

from bounds.registry import UnsupportedOpError
from tests.onnx_import.onnx_util import compare
from tests.onnx_import.op_models import HID, IN, recurrent_model
from verifier.onnx_import.loader import import_proto

CASES = {
    "rnn": dict(op="RNN"),
    "rnn_reverse_h0_input": dict(op="RNN", direction="reverse", h0="input"),
    "rnn_bidirectional_relu": dict(op="RNN", directions=2, activations=["Relu", "Tanh"]),
    "rnn_h0_const_batch2": dict(op="RNN", h0="const", batch=2),
    "gru": dict(op="GRU"),
    "gru_linear_before_reset": dict(op="GRU", linear_before_reset=1, h0="const"),
    "gru_bidirectional_h0_input": dict(op="GRU", directions=2, h0="input"),
    "gru_no_bias_batch2": dict(op="GRU", bias=False, batch=2),
    "gru_hardsigmoid_affine": dict(op="GRU", activations=["HardSigmoid", "Affine"],
                                   activation_alpha=[0.3, 0.7], activation_beta=[0.4, 0.1]),
    "lstm": dict(op="LSTM"),
    "lstm_peepholes_states": dict(op="LSTM", peepholes=True, h0="input", c0="const"),
    "lstm_bidirectional_batch2": dict(op="LSTM", directions=2, h0="const",
                                       c0="input", batch=2),
    "lstm_clip": dict(op="LSTM", clip=0.6, peepholes=True),
    "lstm_input_forget": dict(op="LSTM", input_forget=1),
    "lstm_reverse_lens": dict(op="LSTM", direction="reverse", lens=[3]),
    "lstm_lens_only_y": dict(op="LSTM", lens=[2], outputs=(0,)),
    "lstm_only_c": dict(op="LSTM", outputs=(2,)),
    "lstm_scaledtanh_softsign": dict(op="LSTM", activations=["Sigmoid", "ScaledTanh",
                                                             "Softsign"],
                                     activation_alpha=[1.5], activation_beta=[0.8]),
    "lstm_leaky_elu_softplus": dict(op="LSTM", activations=["HardSigmoid", "LeakyRelu",
                                                            "Softplus"]),
    "lstm_elu": dict(op="LSTM", activations=["Sigmoid", "Elu", "Tanh"],
                     activation_alpha=[0.5]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_recurrent_matches_onnxruntime(name):
    compare(recurrent_model(**CASES[name]), n=6, low=-1.5, high=1.5)


def _import(model):
    data = model.SerializeToString()
    return import_proto(model, data)


@pytest.mark.parametrize("kwargs,match", [
    (dict(op="LSTM", lens=[2, 3], batch=2), "differ across the batch"),
    (dict(op="GRU", activations=["Sigmoid", "Gelu"]), "activation 'Gelu'"),
    (dict(op="RNN", activations=["Affine"]), "without its activation_alpha"),
    (dict(op="RNN", direction="sideways"), "direction 'sideways'"),
    (dict(op="GRU", layout=1), "layout=1"),
])
def test_unsupported_uses_name_the_reason(kwargs, match):
    with pytest.raises(UnsupportedOpError, match=match):
        _import(recurrent_model(**kwargs))


def test_dynamic_weights_are_refused_by_name():
    model = recurrent_model("RNN")
    model.graph.initializer.pop(0)  # W becomes a model input
    model.graph.input.append(helper.make_tensor_value_info("W", 1, (1, HID, IN)))
    with pytest.raises(UnsupportedOpError, match="W of RNN node"):
        _import(model)
