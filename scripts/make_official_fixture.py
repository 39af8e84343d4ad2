"""Write tests/fixtures/official_tiny/: a small TensorFlow checkpoint laid out like the
official Pix2Seq Objects365 detector (ResNet-50 C4 "resnet-c" + transformer encoder, its
projection and its autoregressive decoder), at reduced sizes, and the values the tests of
`platform/official` expect from it.

TensorFlow is not a dependency of this project, so the script runs in an environment of its
own (Python 3.11):

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf_keras
    /tmp/tfvenv/bin/python scripts/make_official_fixture.py [--out tests/fixtures/official_tiny]

Regenerate the fixture only when the naming changes (the official object paths, or the sizes
the tests use); its values are random with a fixed seed.

How the names come about. A TF2 object-based checkpoint names each variable by the attribute
path from the checkpoint's root object, not by Keras layer names: the official trainer saves
`tf.train.Checkpoint(model=..., global_step=..., optimizer=...)`, the detector keeps its
image encoder in the attribute `encoder` (ResNet in `resnet`, tokeniser `stem_projection` +
`stem_ln`, `transformer_encoder.enc_layers[i]`, `output_ln`), lists count from 0, and the
keys end in `/.ATTRIBUTES/VARIABLE_VALUE`. The tree below has the official attribute names;
list positions that hold variable-free layers in the official code (padding, identity,
max-pool, DropBlock) hold empty modules here so the indices stay the official ones. The
leaf layers are real Keras layers (`tf_keras`, the Keras 2 the official code was written
for), so Dense, Conv2D, BatchNormalization, LayerNormalization and MultiHeadAttention name
and shape their variables as in the official checkpoint. One step of the legacy Adam with
zero gradients adds the optimizer slot variables the official checkpoints carry
(`.../.OPTIMIZER_SLOT/optimizer/m/...`) without changing a value.

Besides the checkpoint (`ckpt-1.index`, `ckpt-1.data-00000-of-00001`) it writes
`expected.npz`: every variable's value under its name without the `/.ATTRIBUTES/...` tail,
plus `image` (1, 64, 64, 3) uint8 and the encoder's outputs on `image / 255` computed with
these layers in inference mode: `c4` (the ResNet's last map, NHWC) and `tokens` (the
encoder's output, (1, 16, dim)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

# sizes of the fixture (the official detector: 64, (3, 4, 6), 512, 12, 16, 2048)
WIDTH, DEPTHS = 4, (1, 2, 1)
DIM, LAYERS, HEADS, MLP = 32, 2, 4, 64
DEC_DIM, DEC_HEADS, VOCAB, SEQ = 8, 2, 12, 6  # the detector's decoder side, never converted
IMAGE = 64
SEED = 20240527
POSITIVE = ("gamma", "moving_variance")  # drawn in [0.5, 1.5]
L = tf_keras.layers


class Node(tf.Module):
    """A container whose attribute names are the official ones."""


def conv_bn(filters: int, kernel: int, stride: int) -> list[Node]:
    """[Conv2dFixedPadding (attribute `conv2d`), BatchNormRelu (attribute `bn`)]."""
    conv, bn = Node(), Node()
    padding = "same" if stride == 1 else "valid"  # stride > 1: explicit padding first
    conv.conv2d = L.Conv2D(filters, kernel, stride, padding=padding, use_bias=False)
    conv.kernel_size, conv.stride = kernel, stride
    bn.bn = L.BatchNormalization(momentum=0.9, epsilon=1e-5)
    return [conv, bn]


def bottleneck(filters: int, stride: int, projection: bool) -> Node:
    block = Node()
    if projection:
        block.projection_layers = conv_bn(4 * filters, 1, stride)
    c1, b1 = conv_bn(filters, 1, 1)
    c2, b2 = conv_bn(filters, 3, stride)
    c3, b3 = conv_bn(4 * filters, 1, 1)
    # positions 2, 5 and 8 hold DropBlock layers in the official block
    block.conv_relu_dropblock_layers = [c1, b1, Node(), c2, b2, Node(), c3, b3, Node()]
    return block


def resnet_c4() -> Node:
    net = Node()
    stem, stem_bn = conv_bn(WIDTH, 7, 2)
    # official: [stem conv, identity, BN + ReLU, max-pool, identity]
    net.initial_conv_relu_max_pool = [stem, Node(), stem_bn, Node(), Node()]
    net.block_groups = []
    for g, depth in enumerate(DEPTHS):
        group, filters = Node(), WIDTH * 2**g
        group.layers = [bottleneck(filters, 1 if g == 0 else 2, True)]
        group.layers += [bottleneck(filters, 1, False) for _ in range(depth - 1)]
        net.block_groups.append(group)
    return net


def mlp_block(dim: int, mlp_dim: int) -> Node:
    """The official MLP with one FeedForwardLayer (dense1 + GELU, dense2) and its LayerNorm."""
    mlp, ffn = Node(), Node()
    ffn.dense1 = L.Dense(mlp_dim, activation=tf.nn.gelu)
    ffn.dense2 = L.Dense(dim)
    mlp.mlp_layers = [ffn]
    mlp.layernorms = [L.LayerNormalization(epsilon=1e-6)]
    return mlp


def encoder_layer() -> Node:
    layer = Node()
    layer.mha_ln = L.LayerNormalization(epsilon=1e-6)
    layer.mha = L.MultiHeadAttention(HEADS, DIM // HEADS)
    layer.mlp = mlp_block(DIM, MLP)
    return layer


def ar_decoder() -> Node:
    """A one-layer stand-in of the detector's AutoregressiveDecoder with its variable names
    (a weight made by `add_weight(name='ar_decoder/...')` is tracked under that name)."""
    dec, layer = Node(), Node()
    setattr(dec, "ar_decoder/token_embedding", tf.Variable(tf.zeros([VOCAB, DEC_DIM])))
    setattr(dec, "ar_decoder/seq_pos_embedding", tf.Variable(tf.zeros([SEQ, DEC_DIM])))
    setattr(dec, "ar_decoder/outp_bias", tf.Variable(tf.zeros([VOCAB])))
    layer.self_ln = L.LayerNormalization(epsilon=1e-6)
    layer.self_mha = L.MultiHeadAttention(DEC_HEADS, DEC_DIM // DEC_HEADS)
    layer.cross_ln = L.LayerNormalization(epsilon=1e-6)
    layer.cross_mha = L.MultiHeadAttention(DEC_HEADS, DEC_DIM // DEC_HEADS)
    layer.mlp = mlp_block(DEC_DIM, 4 * DEC_DIM)
    dec.decoder = Node()
    dec.decoder.dec_layers = [layer]
    dec.output_ln = L.LayerNormalization(epsilon=1e-6)
    return dec


def detector() -> Node:
    """The detector's `model`: `encoder` (converted), `proj*` and `decoder` (not)."""
    model, enc = Node(), Node()
    enc.resnet = resnet_c4()
    enc.stem_projection = L.Dense(DIM)
    enc.stem_ln = L.LayerNormalization(epsilon=1e-6)
    enc.transformer_encoder = Node()
    enc.transformer_encoder.enc_layers = [encoder_layer() for _ in range(LAYERS)]
    enc.output_ln = L.LayerNormalization(epsilon=1e-6)
    model.encoder = enc
    model.proj = L.Dense(DEC_DIM)
    model.proj_ln = L.LayerNormalization(epsilon=1e-6)
    model.proj_mlp = mlp_block(DEC_DIM, 4 * DEC_DIM)
    model.decoder = ar_decoder()
    return model


def run_conv(conv: Node, x: tf.Tensor) -> tf.Tensor:
    """Official Conv2dFixedPadding: a strided conv pads (k-1)//2 before, the rest after."""
    if conv.stride > 1:
        total = conv.kernel_size - 1
        beg, end = total // 2, total - total // 2
        x = tf.pad(x, [[0, 0], [beg, end], [beg, end], [0, 0]])
    return conv.conv2d(x)


def run_bn(bn: Node, x: tf.Tensor, relu: bool = True) -> tf.Tensor:
    x = bn.bn(x, training=False)
    return tf.nn.relu(x) if relu else x


def run_block(block: Node, x: tf.Tensor) -> tf.Tensor:
    shortcut = x
    if hasattr(block, "projection_layers"):
        conv, bn = block.projection_layers
        shortcut = run_bn(bn, run_conv(conv, x), relu=False)
    c1, b1, _, c2, b2, _, c3, b3, _ = block.conv_relu_dropblock_layers
    h = run_bn(b2, run_conv(c2, run_bn(b1, run_conv(c1, x))))
    return tf.nn.relu(run_bn(b3, run_conv(c3, h), relu=False) + shortcut)


def run_resnet(net: Node, images: tf.Tensor) -> tf.Tensor:
    stem, _, stem_bn, _, _ = net.initial_conv_relu_max_pool
    x = tf.nn.max_pool2d(run_bn(stem_bn, run_conv(stem, images)), 3, 2, "SAME")
    for group in net.block_groups:
        for block in group.layers:
            x = run_block(block, x)
    return x


def run_mlp(mlp: Node, x: tf.Tensor) -> tf.Tensor:
    ffn = mlp.mlp_layers[0]
    return ffn.dense2(ffn.dense1(mlp.layernorms[0](x)))


def sincos(coords: np.ndarray, dim: int) -> np.ndarray:
    """Official `positional_encoding`: sin of the even, cos of the odd angle columns."""
    i = np.arange(dim)
    angles = coords[:, None] / np.power(10000.0, 2 * (i // 2) / dim)[None]
    return np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], -1)


def position_codes_2d(h: int, w: int, dim: int) -> np.ndarray:
    """Official `get_2d_position_codes`: rows in the first half, columns in the second."""
    norm = 6.2831852  # the official normalisation_max
    rows = sincos(np.arange(h) / (h - 1) * norm, dim // 2)
    cols = sincos(np.arange(w) / (w - 1) * norm, dim // 2)
    code = np.concatenate(
        [np.repeat(rows[:, None], w, 1), np.repeat(cols[None], h, 0)], -1
    ).reshape(h * w, dim)
    return code.astype(np.float32)


def run_encoder(enc: Node, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(C4, tokens) of the official ResNetTransformer, inference mode, no CLS token."""
    c4 = run_resnet(enc.resnet, images)
    b, h, w, c = c4.shape
    tokens = enc.stem_ln(enc.stem_projection(tf.reshape(c4, [b, h * w, c])))
    tokens = tokens + position_codes_2d(h, w, DIM)[None]
    for layer in enc.transformer_encoder.enc_layers:
        x_ln = layer.mha_ln(tokens)
        tokens = tokens + layer.mha(x_ln, x_ln, x_ln)
        tokens = tokens + run_mlp(layer.mlp, tokens)
    return c4, enc.output_ln(tokens)


def build(model: Node, images: tf.Tensor) -> None:
    """Create every variable by running each layer once."""
    _, tokens = run_encoder(model.encoder, images)
    memory = run_mlp(model.proj_mlp, model.proj_ln(model.proj(tokens)))
    layer = model.decoder.decoder.dec_layers[0]
    seq = tf.zeros([1, SEQ, DEC_DIM])
    x = layer.self_mha(layer.self_ln(seq), layer.self_ln(seq))
    x = layer.cross_mha(layer.cross_ln(x), memory)
    model.decoder.output_ln(run_mlp(layer.mlp, x))


def randomise(model: Node, rng: np.random.Generator) -> None:
    """Distinct random values everywhere (scales keep the forward pass finite)."""
    for var in model.variables:
        shape = var.shape.as_list()
        if any(name in var.name for name in POSITIVE):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            value = rng.normal(0.0, 1.0 / math.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        var.assign(value.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/official_tiny")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    pixels = rng.integers(0, 256, (1, IMAGE, IMAGE, 3), dtype=np.uint8)
    images = tf.constant(pixels.astype(np.float32) / 255.0)
    model = detector()
    build(model, images)
    randomise(model, rng)
    c4, tokens = run_encoder(model.encoder, images)
    opt = tf_keras.optimizers.legacy.Adam()
    trainable = model.trainable_variables
    opt.apply_gradients(zip([tf.zeros_like(v) for v in trainable], trainable))  # slots only
    prefix = tf.train.Checkpoint(model=model, global_step=opt.iterations, optimizer=opt).save(
        str(out / "ckpt")
    )
    expected = {"image": pixels, "c4": c4.numpy(), "tokens": tokens.numpy()}
    for name, _ in tf.train.list_variables(prefix):
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH":
            expected[name.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")] = np.asarray(
                tf.train.load_variable(prefix, name)
            )
    np.savez_compressed(out / "expected.npz", **expected)
    (out / "checkpoint").unlink(missing_ok=True)  # the state file names an absolute path
    sizes = dict(width=WIDTH, depths=DEPTHS, dim=DIM, layers=LAYERS, heads=HEADS, mlp=MLP)
    print(json.dumps({"prefix": prefix, "tensors": len(expected), "sizes": sizes}))


if __name__ == "__main__":
    main()
