"""Models as other exporters wrote them, kept as files (``exported/``): each imports and agrees
with onnxruntime at sampled points. They hold the patterns the converters were written for,
in the exporters' own words:

* ``keras_*.onnx``: ``benchmarks/keras_models.py`` (seed 7; TensorFlow 2.15.1, tf2onnx
  1.16.1, opset 13): blocks (Resize with tf_half_pixel_for_nn, LayerNormalization as a
  BatchNormalization of its own statistics), seq (a SimpleRNN's while Loop, LSTM,
  bidirectional GRU with ReverseSequence), attention (MultiHeadAttention's Einsums), rnn
  (ConvLSTM2D's Loop of Convs, a bidirectional SimpleRNN).
* ``keras_*_ext.onnx``: the same saved by onnxruntime's optimizer at the extended level
  (FusedConv, FusedGemm, QuickGelu: ``converters/contrib.py``).
* ``jax_*.onnx``: jax2onnx 0.17.1 (opset 23): a window sum over NCHW written as a Conv over
  4 spatial axes, a ``lax.scan`` written as a Loop.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.onnx_import.onnx_util import compare

FOLDER = Path(__file__).parent / "exported"
MODELS = sorted(FOLDER.glob("*.onnx"))


def test_the_exported_models_are_there():
    assert len(MODELS) >= 8, MODELS


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_exported_model_agrees_with_onnxruntime(path):
    compare(onnx.load(str(path)), n=8, low=0.0, high=1.0)
