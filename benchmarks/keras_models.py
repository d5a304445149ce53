"""Keras models as a user exports them with tf2onnx, each instance verified by
``nncert verify`` in its own process, optionally against a baseline tree in the same run.

    python -m benchmarks.keras_models [--families cnn blocks seq attention mlp] [--timeout 30]
        [--dir /tmp/nncert-keras] [--compare /work/before] [--nncert-python PY]

Needs TensorFlow and tf2onnx in the interpreter that runs it (they are not nncert's
dependencies, and tf2onnx 1.16 wants TensorFlow 2.15 or older: in a venv of its own,
``pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnxruntime``); ``--nncert-python``
names the interpreter that has nncert's own (torch, onnxruntime), default this one.
tf2onnx writes channels-last graphs: Transposes around every Conv and pooling, Dense layers
on 3-D tensors as MatMul between Reshapes whose shapes are computed from the input's Shape,
BatchNormalization folded or written out, Keras RNN layers as ONNX LSTM/GRU/RNN nodes between
Transposes and Squeezes. Models, trained for two epochs with fixed seeds on synthetic data (no
download) so that BatchNormalization and Normalization hold non-trivial statistics:

* ``cnn``: an MNIST-shaped CNN (Rescaling, Conv2D, BatchNormalization, ReLU, MaxPooling2D,
  Dropout, Flatten, Dense, Softmax).
* ``blocks``: a functional CNN over 16x16x3 with ZeroPadding2D, SeparableConv2D,
  DepthwiseConv2D, AveragePooling2D, UpSampling2D, Cropping2D, Concatenate, Add, LeakyReLU,
  ELU, PReLU, swish, GELU, hard sigmoid, softplus, SELU, tanh, LayerNormalization and
  GlobalAveragePooling2D.
* ``seq``: a sensor-sequence model over 16 steps of 4 features: Conv1D, MaxPooling1D, an LSTM
  returning sequences, a bidirectional GRU, a SimpleRNN, GlobalMaxPooling1D and Dense.
* ``attention``: a one-block transformer over 8 tokens of width 16 (MultiHeadAttention, which
  tf2onnx writes with Einsum, LayerNormalization, Dense on 3-D tensors, Add,
  GlobalAveragePooling1D).
* ``mlp``: a Normalization layer adapted to the data, Dense layers with ReLU, tanh and
  sigmoid, Softmax.
* ``merge``: ReLU6, bilinear UpSampling2D, Conv2DTranspose, the merge layers (Average,
  Maximum, Minimum, Subtract, Multiply), Resizing, BatchNormalization, mish, Permute,
  Reshape, TimeDistributed Dense with an exponential activation, RepeatVector,
  Conv1DTranspose, over 12x12x2.
* ``rnn``: ConvLSTM2D over 8 frames of 6x6 (tf2onnx writes a Loop whose body holds the
  Convs), TimeDistributed pooling, a GRU with reset_after=False, a bidirectional SimpleRNN.
* ``mobilenetv3``, ``efficientnet``, ``densenet``, ``resnet50``: Keras Applications
  (MobileNetV3Small, EfficientNetB0, DenseNet121, ResNet50) at random weights, 5 classes,
  64x64 (DenseNet 32x32) inputs: scale probes (every run ends on time, fits in memory). Not in
  the default families. (ConvNeXt does not export: tf2onnx 1.16 leaves a PartitionedCall in
  its depthwise convolutions.)

Specs: the label at a point stays the argmax, over an L_inf ball of two radii at three
points. Prints one line per instance and the counts and total seconds per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import fresh_runs

SHAPES = {"cnn": (28, 28, 1), "blocks": (16, 16, 3), "seq": (16, 4), "attention": (8, 16),
          "mlp": (20,), "merge": (12, 12, 2), "rnn": (8, 6, 6, 1),
          "mobilenetv3": (64, 64, 3), "efficientnet": (64, 64, 3), "densenet": (32, 32, 3),
          "resnet50": (64, 64, 3)}
# Keras Applications at random weights (no download, not trained): scale probes.
APPS = {"mobilenetv3": "MobileNetV3Small", "efficientnet": "EfficientNetB0",
        "densenet": "DenseNet121", "resnet50": "ResNet50"}
CLASSES = 5
RADII = (0.005, 0.02)


def _layers():
    import tensorflow as tf
    return tf.keras.layers


def _cnn(inputs):
    layers = _layers()
    x = layers.Rescaling(1 / 2.0, offset=-0.25)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    return layers.Dense(CLASSES, activation="softmax")(x)


def _blocks(inputs):
    layers = _layers()
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    a = layers.SeparableConv2D(8, 3, padding="same")(x)
    a = layers.LeakyReLU(0.1)(a)
    b = layers.DepthwiseConv2D(3, padding="same")(x)
    b = layers.ELU()(b)
    x = layers.Add()([a, b])
    x = layers.PReLU(shared_axes=[1, 2])(x)
    x = layers.AveragePooling2D(2)(x)
    up = layers.UpSampling2D(2)(x)
    up = layers.Cropping2D(3)(up)
    up = layers.Conv2D(8, 3, activation="swish")(up)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="gelu")(x)
    x = layers.Concatenate()([layers.AveragePooling2D(2)(up), x])
    x = layers.Activation("hard_sigmoid")(x)
    x = layers.LayerNormalization()(x)
    x = layers.Conv2D(8, 1, activation="softplus")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="selu")(x)
    x = layers.Dense(16, activation="tanh")(x)
    return layers.Dense(CLASSES, activation="softmax")(x)


def _seq(inputs):
    layers = _layers()
    x = layers.Conv1D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling1D(2)(x)
    x = layers.LSTM(8, return_sequences=True)(x)
    x = layers.Bidirectional(layers.GRU(6, return_sequences=True))(x)
    y = layers.SimpleRNN(6)(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Concatenate()([x, y])
    return layers.Dense(CLASSES)(x)


def _attention(inputs):
    layers = _layers()
    h = layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs)
    x = layers.LayerNormalization()(layers.Add()([inputs, h]))
    f = layers.Dense(32, activation="relu")(x)
    f = layers.Dense(16)(f)
    x = layers.LayerNormalization()(layers.Add()([x, f]))
    x = layers.GlobalAveragePooling1D()(x)
    return layers.Dense(CLASSES)(x)


def _merge(inputs):
    layers = _layers()
    x = layers.Conv2D(6, 3, padding="same", activation="relu6")(inputs)
    up = layers.UpSampling2D(2, interpolation="bilinear")(x)
    up = layers.Conv2D(6, 3, strides=2, padding="same")(up)
    t = layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    t = layers.MaxPooling2D(2)(t)
    x = layers.Average()([layers.Maximum()([x, up]), layers.Minimum()([x, t]),
                          layers.Subtract()([up, t])])
    x = layers.Multiply()([x, layers.Activation("sigmoid")(up)])
    x = layers.Resizing(8, 8)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("mish")(x)
    a = layers.GlobalMaxPooling2D()(x)
    b = layers.Permute((3, 1, 2))(x)
    b = layers.Reshape((6, 64))(b)
    b = layers.TimeDistributed(layers.Dense(4, activation="exponential"))(b)
    b = layers.Flatten()(b)
    x = layers.Concatenate()([a, b])
    x = layers.RepeatVector(3)(x)
    x = layers.Conv1DTranspose(4, 2)(x)
    x = layers.Flatten()(x)
    return layers.Dense(CLASSES, activation="softmax")(x)


def _rnn(inputs):
    """A ConvLSTM2D over 8 frames of 6x6 (tf2onnx: a Loop with Convs inside), then GRU
    (reset_after=False) and a bidirectional SimpleRNN over the frames' features."""
    layers = _layers()
    x = layers.ConvLSTM2D(4, 3, padding="same", return_sequences=True)(inputs)
    x = layers.TimeDistributed(layers.GlobalAveragePooling2D())(x)
    x = layers.GRU(6, reset_after=False, return_sequences=True)(x)
    x = layers.Bidirectional(layers.SimpleRNN(4))(x)
    return layers.Dense(CLASSES)(x)


def _mlp(inputs, data):
    layers = _layers()
    norm = layers.Normalization()
    norm.adapt(data)
    x = norm(inputs)
    x = layers.Dense(32, activation="relu")(x)
    x = layers.Dense(32, activation="tanh")(x)
    x = layers.Dense(16, activation="sigmoid")(x)
    return layers.Dense(CLASSES, activation="softmax")(x)


def _data(shape: tuple, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in [0, 1] and labels of a fixed random linear teacher on them."""
    x = rng.random((512, *shape), dtype=np.float32)
    if len(shape) == 1:
        x = x * 4.0 + 1.0  # an offset and a scale for the Normalization layer to learn
    teacher = rng.standard_normal((int(np.prod(shape)), CLASSES)).astype(np.float32)
    flat = x.reshape(len(x), -1)
    labels = np.argmax((flat - flat.mean(0)) @ teacher, axis=1)
    return x, labels


def _model(family: str, data: np.ndarray, labels: np.ndarray):
    import tensorflow as tf
    if family in APPS:
        build_app = getattr(tf.keras.applications, APPS[family])
        return build_app(weights=None, input_shape=SHAPES[family], classes=CLASSES)
    inputs = tf.keras.Input(SHAPES[family])
    outputs = _mlp(inputs, data) if family == "mlp" else BUILDERS[family](inputs)
    model = tf.keras.Model(inputs, outputs)
    softmax_out = family in ("cnn", "blocks", "mlp", "merge")
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=not softmax_out))
    model.fit(data, labels, epochs=2, batch_size=64, verbose=0)
    return model


def _export(model, family: str, path: Path) -> None:
    import tensorflow as tf
    import tf2onnx
    signature = (tf.TensorSpec((None, *SHAPES[family]), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=13,
                               output_path=str(path))


def build(families: list[str], folder: Path) -> list[tuple[str, Path, Path]]:
    """(model name, onnx, vnnlib) per instance: three points, two radii per model."""
    import onnxruntime as ort
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for family in families:
        tf.keras.utils.set_random_seed(7)
        rng = np.random.default_rng(7)
        data, labels = _data(SHAPES[family], rng)
        onnx_path = folder / f"keras_{family}.onnx"
        _export(_model(family, data, labels), family, onnx_path)
        session = ort.InferenceSession(str(onnx_path))
        feed = session.get_inputs()[0].name
        low, high = float(data.min()), float(data.max())
        for k in (3, 50, 120):
            center = data[k]
            scores = session.run(None, {feed: center[None]})[0].reshape(-1)
            for radius in RADII:
                spec = folder / f"keras_{family}_{k}_{radius}.vnnlib"
                spec.write_text(fresh_runs.argmax_spec(
                    center, radius, int(np.argmax(scores)), CLASSES, low, high))
                instances.append((f"keras_{family}", onnx_path, spec))
    return instances


BUILDERS = {"cnn": _cnn, "blocks": _blocks, "seq": _seq, "attention": _attention,
            "mlp": None, "merge": _merge, "rnn": _rnn}


def main() -> None:
    fresh_runs.main(__doc__.splitlines()[0], list(SHAPES), "/tmp/nncert-keras", build,
                    default=[f for f in SHAPES if f not in APPS])


if __name__ == "__main__":
    main()
