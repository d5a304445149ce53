"""torchvision's classification architectures as a user exports them with
``torch.onnx.export``, each instance verified by ``nncert verify`` in its own process,
optionally against a baseline tree in the same run.

    python -m benchmarks.torchvision_models [--families mobilenet_v3_small vit ...]
        [--timeout 30] [--dir /tmp/nncert-tv] [--first N] [--exporter {default,dynamo}]
        [--compare /work/before] [--nncert-python PY]

Needs ``torchvision`` (not an nncert dependency: in a venv of its own beside ``torch==2.13.0``,
``pip install --no-deps torchvision==0.28.0 pillow``, ``onnx``, ``onnxruntime``);
``--nncert-python`` names the interpreter that has nncert's own, default this one (a
torchvision wheel built for CUDA torch imports through ``fresh_runs.import_torchvision``).

Each family is torchvision's own class at a small configuration (5 classes, 3x32x32 inputs in
[0, 1]), trained for 150 steps with fixed seeds on synthetic data (a random linear teacher's
labels, no download; BatchNorm statistics from that training, eval mode afterwards), exported
by the TorchScript exporter at opset 17 (ViT: the dynamo exporter at opset 18, the
TorchScript one failing on ``aten::_native_multi_head_attention``; ``--exporter dynamo``:
every family by the dynamo exporter at 18, in /tmp/nncert-tv-dynamo by default):

* ``mobilenet_v3_small``: ``MobileNetV3`` with the first, second, fourth and fifth blocks of
  the small setting at width 0.5 (ReLU and Hardswish, Hardsigmoid squeeze-excite), last
  channel 64;
* ``mobilenet_v2``: ``MobileNetV2`` at width 0.25, three stages (t, c, n, s) = (1, 16, 1, 1),
  (6, 24, 2, 2), (6, 32, 1, 2) (ReLU6; its last 1x1 conv keeps 1280 channels);
* ``shufflenet_v2``: ``ShuffleNetV2``, repeats (2, 2, 2), channels (8, 16, 32, 64, 128)
  (channel shuffle; the channel split of each stage's second, stride-1 block);
* ``squeezenet1_1``: ``squeezenet1_1`` as is (its widths are fixed; ceil-mode max-pools);
* ``mnasnet``: ``MNASNet`` at alpha 0.25 (16 inverted residual blocks; 1280 head channels);
* ``googlenet``: ``googlenet`` as is (widths fixed; 9 Inception modules), no auxiliary heads,
  ``init_weights=True``;
* ``densenet``: ``DenseNet``, growth 8, blocks (2, 2, 2), 16 initial features, bn_size 2;
* ``resnext``: ``ResNet`` with ``Bottleneck`` blocks (1, 1, 1, 1), 8 groups of width 4
  (stage widths fixed at 64-512, expansion 4);
* ``regnet``: ``RegNet`` from ``BlockParams.from_init_params`` (depth 3, w_0 16, w_a 8,
  w_m 2, group width 8, squeeze-excite 0.25: RegNetY style), stem width 16;
* ``efficientnet_b0``: ``EfficientNet`` with b0's first three ``MBConvConfig`` rows at width
  0.25 (SiLU, squeeze-excite with Sigmoid), last channel 64;
* ``convnext``: ``ConvNeXt`` with ``CNBlockConfig`` (16 -> 32, 1 block), (32, 1 block)
  (LayerNorm2d, GELU, layer scale);
* ``swin_t``: ``SwinTransformer``, patch 4, embed 16, depths (2, 2), heads (2, 2), window 4
  (shifted windows with their attention masks, PatchMerging);
* ``swin_v2_t``: the same with ``SwinTransformerBlockV2`` and ``PatchMergingV2`` (cosine
  attention, a continuous position bias MLP);
* ``vit``: ``VisionTransformer``, image 32, patch 8, 2 layers, 2 heads, width 32, MLP 64
  (``nn.MultiheadAttention``);
* ``maxvit``: ``MaxVit``, input 32x32, stem 16, partition 2, blocks (16, 32) of one layer,
  head dim 8 (MBConv, block and grid attention with relative position bias).

Specs: the label at a point stays the argmax, over an L_inf ball of radii 0.002 and 0.01 at
two points (``--first 1``: the first point's smaller radius only). Prints one line per
instance and the counts and total seconds per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import fresh_runs

CLASSES = 5
RADII = (0.002, 0.01)
IMAGE = (3, 32, 32)
TRAIN_STEPS = 150
FAMILIES = ("mobilenet_v3_small", "mobilenet_v2", "shufflenet_v2", "squeezenet1_1", "mnasnet",
            "googlenet", "densenet", "resnext", "regnet", "efficientnet_b0", "convnext",
            "swin_t", "swin_v2_t", "vit", "maxvit")
DEFAULT_EXPORT = {"opset_version": 17, "dynamo": False}
# torchvision's ViT calls nn.MultiheadAttention, which in eval mode under torch.no_grad takes
# its fused path (aten::_native_multi_head_attention), which the TorchScript exporter does not
# translate: the dynamo exporter's
EXPORTS = {"vit": {"opset_version": 18, "dynamo": True}}
def _model(family: str):
    """The family's torchvision model at its small configuration."""
    from functools import partial

    tv = fresh_runs.import_torchvision()
    m = tv.models
    if family == "mobilenet_v3_small":
        conf = partial(m.mobilenetv3.InvertedResidualConfig, width_mult=0.5)
        setting = [conf(16, 3, 16, 16, True, "RE", 2, 1), conf(16, 3, 72, 24, False, "RE", 2, 1),
                   conf(24, 5, 96, 40, True, "HS", 2, 1), conf(40, 5, 240, 40, True, "HS", 1, 1)]
        return m.MobileNetV3(setting, last_channel=64, num_classes=CLASSES)
    if family == "mobilenet_v2":
        return m.MobileNetV2(num_classes=CLASSES, width_mult=0.25,
                             inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2],
                                                        [6, 32, 1, 2]])
    if family == "shufflenet_v2":
        return m.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128], num_classes=CLASSES)
    if family == "squeezenet1_1":
        return m.squeezenet1_1(num_classes=CLASSES)
    if family == "mnasnet":
        return m.MNASNet(0.25, num_classes=CLASSES)
    if family == "googlenet":
        return m.googlenet(num_classes=CLASSES, aux_logits=False, init_weights=True)
    if family == "densenet":
        return m.DenseNet(growth_rate=8, block_config=(2, 2, 2), num_init_features=16,
                          bn_size=2, num_classes=CLASSES)
    if family == "resnext":
        return m.ResNet(m.resnet.Bottleneck, [1, 1, 1, 1], num_classes=CLASSES, groups=8,
                        width_per_group=4)
    if family == "regnet":
        params = m.regnet.BlockParams.from_init_params(depth=3, w_0=16, w_a=8.0, w_m=2.0,
                                                       group_width=8, se_ratio=0.25)
        return m.RegNet(params, num_classes=CLASSES, stem_width=16)
    if family == "efficientnet_b0":
        conf = partial(m.efficientnet.MBConvConfig, width_mult=0.25, depth_mult=1.0)
        setting = [conf(1, 3, 1, 32, 16, 1), conf(6, 3, 2, 16, 24, 2), conf(6, 5, 2, 24, 40, 2)]
        return m.EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.0,
                              num_classes=CLASSES, last_channel=64)
    if family == "convnext":
        cn = m.convnext.CNBlockConfig
        return m.ConvNeXt([cn(16, 32, 1), cn(32, None, 1)], stochastic_depth_prob=0.0,
                          num_classes=CLASSES)
    if family in ("swin_t", "swin_v2_t"):
        sw = m.swin_transformer
        v2 = ({"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2}
              if family == "swin_v2_t" else {})
        return m.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2],
                                 num_heads=[2, 2], window_size=[4, 4],
                                 stochastic_depth_prob=0.0, num_classes=CLASSES, **v2)
    if family == "vit":
        return m.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                   hidden_dim=32, mlp_dim=64, num_classes=CLASSES)
    if family == "maxvit":
        return m.MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2,
                        block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                        stochastic_depth_prob=0.0, num_classes=CLASSES)
    raise ValueError(family)


def _data(rng: np.random.Generator):
    """Images in [0, 1] and a random linear teacher's labels."""
    x = rng.random((512, *IMAGE), dtype=np.float32)
    flat = x.reshape(len(x), -1)
    teacher = rng.standard_normal((flat.shape[1], CLASSES)).astype(np.float32)
    return x, np.argmax((flat - flat.mean(0)) @ teacher, axis=1)


def _make(family: str, rng: np.random.Generator):
    x, labels = _data(rng)
    return _model(family), x, labels, RADII, (0.0, 1.0)


def build(families: list[str], folder: Path, exporter: str = "default"
          ) -> list[tuple[str, Path, Path]]:
    """(model name, onnx, vnnlib) per instance: two points, two radii per model."""
    exports = {family: EXPORTS.get(family, DEFAULT_EXPORT) for family in families}
    return fresh_runs.build_families(families, folder, "tv", _make, TRAIN_STEPS, CLASSES,
                                     exports, exporter)


def main() -> None:
    fresh_runs.main(__doc__.splitlines()[0], list(FAMILIES), "/tmp/nncert-tv", build,
                    exporters=True)


if __name__ == "__main__":
    main()
