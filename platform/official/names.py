"""Which variable of an official Pix2Seq checkpoint becomes which weight of our encoder.

The official image encoder (`ResNetTransformer`: a ResNet-50 cut after stage 3, a Dense +
LayerNorm tokeniser, pre-LN transformer layers, a final LayerNorm; paper §3.1) is the
attribute `encoder` of the detector (`encoder_ar_decoder`) and of the panoptic model, which
also keeps an EMA copy in `encoder_ema`. A TF2 checkpoint names a variable by its attribute
path from the checkpoint's root, lists counted from 0 (`resnet/block_groups/1/layers/0/...`);
the official lists hold variable-free layers too, which is why the convolutions of a
bottleneck sit at positions 0, 3, 6 of `conv_relu_dropblock_layers` and their BatchNorms at
1, 4, 7. docs/official_checkpoint.md has the table.

A `Rule` names one of our state-dict keys, the official variables it is made of (relative to
the encoder's root, without the `/.ATTRIBUTES/VARIABLE_VALUE` tail; several are concatenated
along our dimension 0) and the `Layout` change between the two.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pix2seqd.models.config import EncoderConfig

# where the encoder lives, preferred first: the panoptic model's EMA copy (its evaluation
# weights), then the online encoder (the detector keeps no EMA copy)
ENCODER_ROOTS = ("model/encoder_ema/", "model/encoder/")
STEM_KERNEL = "resnet/initial_conv_relu_max_pool/0/conv2d/kernel"
TRAINED_SCOPE = ("encoder.backbone.", "encoder.tokenizer.", "encoder.transformer.")
# Keras BatchNormalization -> torch BatchNorm2d
BN_PARTS = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)
# bottleneck: (official conv position, BN position, our conv, our BN)
BOTTLENECK = ((0, 1, "conv1", "bn1"), (3, 4, "conv2", "bn2"), (6, 7, "conv3", "bn3"))


class Layout(str, enum.Enum):
    """How an official tensor is laid out, and so how it becomes ours."""

    VECTOR = "vector"  # (n,): as it is
    CONV = "conv"  # Conv2D kernel (kh, kw, in, out) -> (out, in, kh, kw)
    DENSE = "dense"  # Dense kernel (in, out) -> Linear weight (out, in)
    HEADS_IN = "heads_in"  # attention q/k/v kernel (dim, heads, head_dim) -> (heads*head_dim, dim)
    HEADS_BIAS = "heads_bias"  # attention q/k/v bias (heads, head_dim) -> (heads*head_dim,)
    HEADS_OUT = (
        "heads_out"  # attention output kernel (heads, head_dim, dim) -> (dim, heads*head_dim)
    )


@dataclass(frozen=True)
class Rule:
    key: str
    official: tuple[str, ...]
    layout: Layout


def encoder_rules(enc: EncoderConfig) -> list[Rule]:
    """Every weight of our backbone, tokeniser and transformer for the sizes of `enc`."""
    return backbone_rules(enc.depths) + tokenizer_rules() + transformer_rules(enc.tf_layers)


def conv_bn(conv: str, bn: str, our_conv: str, our_bn: str) -> list[Rule]:
    """An official Conv2dFixedPadding (`conv2d`) + BatchNormRelu (`bn`) pair."""
    rules = [Rule(f"{our_conv}.weight", (f"{conv}/conv2d/kernel",), Layout.CONV)]
    return rules + [Rule(f"{our_bn}.{t}", (f"{bn}/bn/{s}",), Layout.VECTOR) for s, t in BN_PARTS]


def backbone_rules(depths: tuple[int, ...]) -> list[Rule]:
    stem, ours = "resnet/initial_conv_relu_max_pool", "encoder.backbone"
    rules = conv_bn(f"{stem}/0", f"{stem}/2", f"{ours}.conv1", f"{ours}.bn1")
    for g, depth in enumerate(depths):
        for b in range(depth):
            block, our = f"resnet/block_groups/{g}/layers/{b}", f"{ours}.layer{g + 1}.{b}"
            if b == 0:  # the first block of every stage projects its shortcut
                proj = f"{block}/projection_layers"
                rules += conv_bn(
                    f"{proj}/0", f"{proj}/1", f"{our}.downsample.0", f"{our}.downsample.1"
                )
            layers = f"{block}/conv_relu_dropblock_layers"
            for conv, bn, our_conv, our_bn in BOTTLENECK:
                rules += conv_bn(
                    f"{layers}/{conv}", f"{layers}/{bn}", f"{our}.{our_conv}", f"{our}.{our_bn}"
                )
    return rules


def dense(official: str, ours: str) -> list[Rule]:
    return [
        Rule(f"{ours}.weight", (f"{official}/kernel",), Layout.DENSE),
        Rule(f"{ours}.bias", (f"{official}/bias",), Layout.VECTOR),
    ]


def layer_norm(official: str, ours: str) -> list[Rule]:
    return [
        Rule(f"{ours}.weight", (f"{official}/gamma",), Layout.VECTOR),
        Rule(f"{ours}.bias", (f"{official}/beta",), Layout.VECTOR),
    ]


def tokenizer_rules() -> list[Rule]:
    return dense("stem_projection", "encoder.tokenizer.proj") + layer_norm(
        "stem_ln", "encoder.tokenizer.ln"
    )


def attention(mha: str, ours: str) -> list[Rule]:
    """Keras MultiHeadAttention -> our Attention: q, then k and v stacked into kv."""
    q, k, v, o = (f"{mha}/_{n}_dense" for n in ("query", "key", "value", "output"))
    return [
        Rule(f"{ours}.q.weight", (f"{q}/kernel",), Layout.HEADS_IN),
        Rule(f"{ours}.q.bias", (f"{q}/bias",), Layout.HEADS_BIAS),
        Rule(f"{ours}.kv.weight", (f"{k}/kernel", f"{v}/kernel"), Layout.HEADS_IN),
        Rule(f"{ours}.kv.bias", (f"{k}/bias", f"{v}/bias"), Layout.HEADS_BIAS),
        Rule(f"{ours}.out.weight", (f"{o}/kernel",), Layout.HEADS_OUT),
        Rule(f"{ours}.out.bias", (f"{o}/bias",), Layout.VECTOR),
    ]


def transformer_rules(n_layers: int) -> list[Rule]:
    rules: list[Rule] = []
    for i in range(n_layers):
        layer, ours = f"transformer_encoder/enc_layers/{i}", f"encoder.transformer.layers.{i}"
        rules += layer_norm(f"{layer}/mha_ln", f"{ours}.ln_attn")
        rules += attention(f"{layer}/mha", f"{ours}.attn")
        rules += layer_norm(f"{layer}/mlp/layernorms/0", f"{ours}.ln_mlp")
        rules += dense(f"{layer}/mlp/mlp_layers/0/dense1", f"{ours}.mlp.fc1")
        rules += dense(f"{layer}/mlp/mlp_layers/0/dense2", f"{ours}.mlp.fc2")
    return rules + layer_norm("output_ln", "encoder.transformer.ln_out")
