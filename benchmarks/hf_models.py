"""Hugging Face ``transformers`` models as a user exports them with ``torch.onnx.export``,
each instance verified by ``nncert verify`` in its own process, optionally against a baseline
tree in the same run.

    python -m benchmarks.hf_models [--families vit deit swin ...] [--timeout 30]
        [--dir /tmp/nncert-hf] [--first N] [--exporter {default,dynamo}]
        [--compare /work/before] [--nncert-python PY]

Needs ``transformers`` (not an nncert dependency: in a venv of its own, ``pip install
torch==2.13.0 transformers onnx onnxruntime``); ``--nncert-python`` names the interpreter that
has nncert's own, default this one. Each family is the library's own architecture at a small
configuration (2-4 blocks, width 16-64, 5 classes; eager attention), trained for 150 steps
with fixed seeds on synthetic data (a random linear teacher's labels, no download), exported
by the TorchScript exporter at opset 17 (MobileViTV2's Col2Im: the dynamo exporter at 18;
LayerNormalization as one node; GroupNorm, weight-standardised convolutions, relative position
biases, window shifts as the library writes them; ``--exporter dynamo``: every family by the
dynamo exporter at 18, in /tmp/nncert-hf-dynamo by default):

* vision, 3x32x32 inputs in [0, 1]: ``vit``, ``deit`` (class and distillation tokens),
  ``beit`` (relative position bias), ``dinov2``, ``swin`` (shifted windows), ``hiera``,
  ``convnext``, ``convnextv2`` (global response normalisation), ``mobilevit``, ``resnet``,
  ``regnet``, ``poolformer``, ``levit`` (attention biases, Hardswish), ``mobilenetv1``,
  ``mobilenetv2``, ``segformer``, ``bit`` (weights standardised in the graph), ``focalnet``,
  ``swiftformer``, ``efficientnet`` (SiLU, squeeze-and-excitation), ``mobilevitv2``
  (separable attention), ``cvt`` (convolutional projections), ``pvt_v2``;
* text, over input embeddings (8 tokens; the model's own embedding lookup is skipped, as
  robustness specs perturb embeddings): ``bert``, ``distilbert``, ``roberta``, ``electra``,
  ``deberta``, ``mpnet`` (relative position buckets), ``gpt2``, ``llama`` (RMSNorm, rotary
  embeddings, gated SiLU), ``qwen2``, ``mistral``, ``gemma`` (GeGLU with GELU's tanh
  form), ``phi`` (gelu_new, partial rotary embeddings).

Specs: the label at a point stays the argmax, over an L_inf ball of two radii at two
points (``--first 1``: the first point's smaller radius only). Prints one line per
instance and the counts and total seconds per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import fresh_runs

CLASSES = 5
RADII = {"vision": (0.002, 0.01), "text": (0.005, 0.02)}
IMAGE = (3, 32, 32)
TOKENS = 8
TRAIN_STEPS = 150


def _vision(t) -> dict:
    v = {"num_labels": CLASSES}
    small = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2}
    return {
        "vit": (t.ViTForImageClassification, t.ViTConfig(intermediate_size=64, **small, **v)),
        "deit": (t.DeiTForImageClassification,
                 t.DeiTConfig(intermediate_size=64, **small, **v)),
        "beit": (t.BeitForImageClassification,
                 t.BeitConfig(intermediate_size=64, use_relative_position_bias=True, **small,
                              **v)),
        "dinov2": (t.Dinov2ForImageClassification, t.Dinov2Config(mlp_ratio=2, **small, **v)),
        "swin": (t.SwinForImageClassification,
                 t.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2],
                              num_heads=[2, 2], window_size=4, **v)),
        "hiera": (t.HieraForImageClassification,
                  t.HieraConfig(image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2],
                                patch_padding=[1, 1], embed_dim=16, num_heads=[1, 2],
                                depths=[1, 1], embed_dim_multiplier=2.0, num_query_pool=1,
                                query_stride=[2, 2], masked_unit_size=[4, 4], **v)),
        "convnext": (t.ConvNextForImageClassification,
                     t.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, **v)),
        "convnextv2": (t.ConvNextV2ForImageClassification,
                       t.ConvNextV2Config(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                          **v)),
        "mobilevit": (t.MobileViTForImageClassification,
                      t.MobileViTConfig(image_size=32, patch_size=2, hidden_sizes=[16, 24, 32],
                                        neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32], **v)),
        "resnet": (t.ResNetForImageClassification,
                   t.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], **v)),
        "regnet": (t.RegNetForImageClassification,
                   t.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                  groups_width=8, **v)),
        "poolformer": (t.PoolFormerForImageClassification,
                       t.PoolFormerConfig(hidden_sizes=[16, 32, 32, 32], depths=[1, 1, 1, 1],
                                          **v)),
        "levit": (t.LevitForImageClassification,
                  t.LevitConfig(image_size=32, hidden_sizes=[32, 48, 64],
                                num_attention_heads=[2, 2, 2], depths=[1, 1, 1],
                                key_dim=[8, 8, 8], **v)),
        "mobilenetv1": (t.MobileNetV1ForImageClassification,
                        t.MobileNetV1Config(image_size=32, depth_multiplier=0.25, **v)),
        "mobilenetv2": (t.MobileNetV2ForImageClassification,
                        t.MobileNetV2Config(image_size=32, depth_multiplier=0.25, **v)),
        "segformer": (t.SegformerForImageClassification,
                      t.SegformerConfig(hidden_sizes=[16, 32], depths=[1, 1],
                                        num_encoder_blocks=2, sr_ratios=[2, 1],
                                        num_attention_heads=[1, 2], decoder_hidden_size=32,
                                        strides=[4, 2], patch_sizes=[7, 3], **v)),
        "bit": (t.BitForImageClassification,
                t.BitConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                            num_groups=4, **v)),
        "focalnet": (t.FocalNetForImageClassification,
                     t.FocalNetConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                      **v)),
        "swiftformer": (t.SwiftFormerForImageClassification,
                        t.SwiftFormerConfig(image_size=32, embed_dims=[16, 24, 32, 48],
                                            depths=[1, 1, 1, 1], **v)),
        # (the head's width is round_filters(1280) = 128 at width 0.1, and must be hidden_dim)
        "efficientnet": (t.EfficientNetForImageClassification,
                         t.EfficientNetConfig(image_size=32, width_coefficient=0.1,
                                              depth_coefficient=1.0, hidden_dim=128,
                                              kernel_sizes=[3, 3, 5], in_channels=[32, 16, 24],
                                              out_channels=[16, 24, 40], strides=[1, 2, 2],
                                              num_block_repeats=[1, 1, 1],
                                              expand_ratios=[1, 2, 2], depthwise_padding=[],
                                              **v)),
        "mobilevitv2": (t.MobileViTV2ForImageClassification,
                        t.MobileViTV2Config(image_size=32, patch_size=1, width_multiplier=0.25,
                                            n_attn_blocks=[1, 1, 1], **v)),
        # (depth 2 in the last stage: the library indexes its drop-path rates by the stage)
        "cvt": (t.CvtForImageClassification,
                t.CvtConfig(patch_sizes=[7, 3], patch_stride=[4, 2], patch_padding=[2, 1],
                            embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2],
                            mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0],
                            drop_rate=[0.0, 0.0], drop_path_rate=[0.0, 0.0],
                            qkv_bias=[True, True], cls_token=[False, True],
                            qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3],
                            padding_kv=[1, 1], stride_kv=[2, 2], padding_q=[1, 1],
                            stride_q=[1, 1], **v)),
        "pvt_v2": (t.PvtV2ForImageClassification,
                   t.PvtV2Config(image_size=32, hidden_sizes=[16, 32], depths=[1, 1],
                                 num_encoder_blocks=2, sr_ratios=[2, 1],
                                 num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2],
                                 mlp_ratios=[2, 2], **v)),
    }


def _text(t) -> dict:
    s = {"num_labels": CLASSES, "vocab_size": 50, "max_position_embeddings": 32}
    bert = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64}
    decoder = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": 0}
    return {
        "bert": (t.BertForSequenceClassification, t.BertConfig(**bert, **s)),
        "distilbert": (t.DistilBertForSequenceClassification,
                       t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **s)),
        "roberta": (t.RobertaForSequenceClassification,
                    t.RobertaConfig(pad_token_id=1, **bert, **s)),
        "electra": (t.ElectraForSequenceClassification,
                    t.ElectraConfig(embedding_size=32, **bert, **s)),
        "deberta": (t.DebertaV2ForSequenceClassification, t.DebertaV2Config(**bert, **s)),
        "mpnet": (t.MPNetForSequenceClassification, t.MPNetConfig(**bert, **s)),
        "gpt2": (t.GPT2ForSequenceClassification,
                 t.GPT2Config(n_embd=32, n_layer=2, n_head=2, pad_token_id=0,
                              num_labels=CLASSES, vocab_size=50, n_positions=32)),
        "llama": (t.LlamaForSequenceClassification, t.LlamaConfig(**decoder, **s)),
        "qwen2": (t.Qwen2ForSequenceClassification, t.Qwen2Config(**decoder, **s)),
        "mistral": (t.MistralForSequenceClassification, t.MistralConfig(**decoder, **s)),
        "gemma": (t.GemmaForSequenceClassification,
                  t.GemmaConfig(head_dim=16, hidden_act="gelu_pytorch_tanh", **decoder, **s)),
        "phi": (t.PhiForSequenceClassification, t.PhiConfig(**decoder, **s)),
    }


VISION = ("vit", "deit", "beit", "dinov2", "swin", "hiera", "convnext", "convnextv2",
          "mobilevit", "resnet", "regnet", "poolformer", "levit", "mobilenetv1", "mobilenetv2",
          "segformer", "bit", "focalnet", "swiftformer", "efficientnet", "mobilevitv2", "cvt",
          "pvt_v2")
DEFAULT_EXPORT = {"opset_version": 17, "dynamo": False}
# MobileViTV2 folds its patches back (torch's fold: Col2Im, from opset 18), which the
# TorchScript exporter fails to translate: the dynamo exporter's
EXPORTS = {"mobilevitv2": {"opset_version": 18, "dynamo": True}}
TEXT = ("bert", "distilbert", "roberta", "electra", "deberta", "mpnet", "gpt2", "llama",
        "qwen2", "mistral", "gemma", "phi")


def _wrapped(family: str):
    """The family's model (eval mode) as a module from one float input to the logits."""
    import torch
    try:  # transformers imports torchvision where it is installed (a CUDA wheel: see there)
        fresh_runs.import_torchvision()
    except ImportError:
        pass
    import transformers

    kind = "vision" if family in VISION else "text"
    cls, config = (_vision if kind == "vision" else _text)(transformers)[family]
    config._attn_implementation = "eager"  # attention written out (no fused SDPA kernel)
    model = cls(config)
    key = "pixel_values" if kind == "vision" else "inputs_embeds"

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(**{key: x}).logits

    return Logits(), kind, config


def _data(family: str, kind: str, config, rng: np.random.Generator):
    """Inputs (images in [0, 1], or embeddings) and a random linear teacher's labels."""
    shape = IMAGE if kind == "vision" else (TOKENS, config.hidden_size)
    x = rng.random((512, *shape), dtype=np.float32)
    if kind == "text":
        x = rng.standard_normal((512, *shape)).astype(np.float32)
    flat = x.reshape(len(x), -1)
    teacher = rng.standard_normal((flat.shape[1], CLASSES)).astype(np.float32)
    return x, np.argmax((flat - flat.mean(0)) @ teacher, axis=1)


def _make(family: str, rng: np.random.Generator):
    module, kind, config = _wrapped(family)
    x, labels = _data(family, kind, config, rng)
    return module, x, labels, RADII[kind], (0.0, 1.0) if kind == "vision" else (None, None)


def build(families: list[str], folder: Path, exporter: str = "default"
          ) -> list[tuple[str, Path, Path]]:
    """(model name, onnx, vnnlib) per instance: two points, two radii per model."""
    exports = {family: EXPORTS.get(family, DEFAULT_EXPORT) for family in families}
    return fresh_runs.build_families(families, folder, "hf", _make, TRAIN_STEPS, CLASSES,
                                     exports, exporter)


def main() -> None:
    fresh_runs.main(__doc__.splitlines()[0], list(VISION + TEXT), "/tmp/nncert-hf", build,
                    exporters=True)


if __name__ == "__main__":
    main()
