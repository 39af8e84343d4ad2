"""Converting the official Pix2Seq TensorFlow checkpoints (platform/official, jobs/
convert_official.py) on tests/fixtures/official_tiny: a checkpoint written by TensorFlow with
the official variable names at reduced sizes, and TensorFlow's own values and encoder
outputs for it (scripts/make_official_fixture.py)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers_jobs import load_job

from pix2seqd.platform.config import from_flat, override
from pix2seqd.platform.official import crc32c
from pix2seqd.platform.official.convert import convert, encoder_root, unused_groups
from pix2seqd.platform.official.tf_checkpoint import (
    TABLE_MAGIC,
    CheckpointError,
    TFCheckpoint,
    read_table,
)
from pix2seqd.platform.presets import get_preset
from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.step import build_model

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_tiny"
PREFIX = FIXTURE / "ckpt-1"
TAIL = "/.ATTRIBUTES/VARIABLE_VALUE"
ENC = "model/encoder/"
# the fixture's sizes on top of the tiny preset (which has 2 layers, 4 heads)
SIZES = {
    "model.encoder.width": "4",
    "model.encoder.depths": "1,2,1",
    "model.encoder.tf_dim": "32",
    "model.encoder.tf_mlp": "64",
}


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURE / "expected.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def ckpt():
    return TFCheckpoint(PREFIX)


def tiny_config(**extra: str):
    return override(get_preset("tiny"), {**SIZES, **extra})


def tf_value(expected, name: str) -> np.ndarray:
    return expected[ENC + name]


def test_reader_lists_every_tensor_with_tensorflows_shape_and_dtype(ckpt, expected):
    tensors = {k for k in expected if k not in ("image", "c4", "tokens")}
    assert set(ckpt.entries) == {k + TAIL for k in tensors} | {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert ckpt.entries["_CHECKPOINTABLE_OBJECT_GRAPH"].dtype_name == "string"
    for name in tensors:
        entry = ckpt.entries[name + TAIL]
        assert entry.shape == expected[name].shape, name
        assert entry.dtype_name == str(expected[name].dtype), name
    stem = ckpt.entries[ENC + "resnet/initial_conv_relu_max_pool/0/conv2d/kernel" + TAIL]
    assert stem.shape == (7, 7, 3, 4)


def test_reader_values_equal_tensorflows(ckpt, expected):
    for name, entry in ckpt.entries.items():
        if entry.dtype_name != "string":
            value = ckpt.read(name)
            assert value.dtype == expected[name.removesuffix(TAIL)].dtype
            np.testing.assert_array_equal(value, expected[name.removesuffix(TAIL)], err_msg=name)


def test_a_checkpoint_is_found_by_prefix_index_file_or_folder(tmp_path):
    assert TFCheckpoint(FIXTURE / "ckpt-1.index").prefix == PREFIX
    assert TFCheckpoint(FIXTURE).prefix == PREFIX
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{PREFIX}"\n')
    assert TFCheckpoint(tmp_path).prefix == PREFIX
    with pytest.raises(CheckpointError, match="no such file"):
        TFCheckpoint(tmp_path / "ckpt-7")


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def table_block(entries: list[tuple[int, bytes, bytes]]) -> bytes:
    """(shared key bytes, own key bytes, value) entries, one restart point at 0."""
    body = b"".join(varint(s) + varint(len(k)) + varint(len(v)) + k + v for s, k, v in entries)
    return body + struct.pack("<II", 0, 1)


def test_a_table_of_several_blocks_with_shared_key_prefixes_reads_every_key(tmp_path):
    data, handles = b"", []
    for entries in ([(0, b"", b"header"), (0, b"ab", b"1"), (2, b"c", b"2")], [(0, b"b", b"3")]):
        raw = table_block(entries)
        handles.append(varint(len(data)) + varint(len(raw)))
        data += raw + bytes(5)  # trailer: not compressed, checksum (not read)
    index = table_block([(0, b"abc", handles[0]), (0, b"b", handles[1])])
    handles_of_footer = varint(0) + varint(0) + varint(len(data)) + varint(len(index))
    data += index + bytes(5) + handles_of_footer.ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    (tmp_path / "t.index").write_bytes(data)
    assert read_table(tmp_path / "t.index") == {"": b"header", "ab": b"1", "abc": b"2", "b": b"3"}


def test_crc32c_has_the_standard_check_value_and_lanes_agree_with_bytes():
    assert crc32c.value(b"123456789") == 0xE3069283  # the published CRC-32C check value
    assert crc32c.value(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 70_001, dtype=np.uint8).tobytes()
    assert crc32c.value(data) == crc32c._serial(data)  # 256 lanes and a 113-byte tail


def converted_state(ckpt, cfg=None):
    return convert(ckpt, (cfg or tiny_config()).model.encoder).state


def test_converted_tensors_are_the_official_ones_in_our_layout(ckpt, expected):
    state = converted_state(ckpt)
    stem = tf_value(expected, "resnet/initial_conv_relu_max_pool/0/conv2d/kernel")
    np.testing.assert_array_equal(
        state["encoder.backbone.conv1.weight"], stem.transpose(3, 2, 0, 1)
    )
    block = "resnet/block_groups/1/layers/1/conv_relu_dropblock_layers"
    np.testing.assert_array_equal(
        state["encoder.backbone.layer2.1.bn2.running_var"],
        tf_value(expected, f"{block}/4/bn/moving_variance"),
    )
    proj = tf_value(expected, "resnet/block_groups/2/layers/0/projection_layers/0/conv2d/kernel")
    assert state["encoder.backbone.layer3.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    np.testing.assert_array_equal(
        state["encoder.backbone.layer3.0.downsample.0.weight"][:, :, 0, 0], proj[0, 0].T
    )
    tokenizer = tf_value(expected, "stem_projection/kernel")
    np.testing.assert_array_equal(state["encoder.tokenizer.proj.weight"], tokenizer.T)
    mha = "transformer_encoder/enc_layers/1/mha"
    key, value = (tf_value(expected, f"{mha}/_{n}_dense/kernel") for n in ("key", "value"))
    # (dim, heads, head_dim): output channel h * head_dim + j of our Linear
    kv = torch.from_numpy(state["encoder.transformer.layers.1.attn.kv.weight"].numpy())
    assert kv.shape == (64, 32)
    np.testing.assert_array_equal(kv[2 * 8 + 5], key[:, 2, 5])
    np.testing.assert_array_equal(kv[32 + 3 * 8 + 1], value[:, 3, 1])
    q_bias = tf_value(expected, f"{mha}/_query_dense/bias")
    assert state["encoder.transformer.layers.1.attn.q.bias"][1 * 8 + 7] == q_bias[1, 7]
    out = tf_value(expected, f"{mha}/_output_dense/kernel")  # (heads, head_dim, dim)
    assert state["encoder.transformer.layers.1.attn.out.weight"][30, 2 * 8 + 4] == out[2, 4, 30]
    np.testing.assert_array_equal(
        state["encoder.transformer.ln_out.bias"], tf_value(expected, "output_ln/beta")
    )


def test_converted_encoder_reproduces_tensorflows_outputs(ckpt, expected):
    """The official forward (run by TensorFlow in the fixture script) against ours with the
    converted weights and the conventions the converter records (stem_pool tf_same: the stem
    pooled as TensorFlow's SAME does), through the model's own forward: C4 and the tokens."""
    cfg = override(tiny_config(), {"model.encoder.stem_pool": "tf_same"})
    model = build_model(cfg).eval()
    model.load_state_dict(converted_state(ckpt), strict=False)
    image = torch.from_numpy(expected["image"].astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        c4 = model.encoder.backbone(image)[-1]
        _, tokens = model.encoder.encode_tokens(image)
    np.testing.assert_allclose(c4.permute(0, 2, 3, 1), expected["c4"], atol=1e-5)
    np.testing.assert_allclose(tokens, expected["tokens"], atol=1e-5)


def test_job_writes_a_checkpoint_the_tiny_model_loads(tmp_path, capsys, expected):
    sets = [a for k, v in SIZES.items() for a in ("--set", f"{k}={v}")]
    job = load_job("convert_official")
    job.main(
        ["-q", "--tf-checkpoint", str(PREFIX), "--out", str(tmp_path), "--preset", "tiny"] + sets
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint"] == str(tmp_path / "checkpoint.pt")
    assert summary["tf_root"] == ENC and summary["input_norm"] == "none"
    assert summary["stem_pool"] == "tf_same"
    # 3 projections + 4 bottlenecks x 3 conv/BN pairs + stem = 16 pairs of 5; 2 layers x 16; 6
    assert summary["tf_variables_used"] == 16 * 5 + 2 * 16 + 6
    assert summary["tf_variables_unused"]["model/decoder"] == 31
    assert summary["tf_variables_unused"]["optimizer"] == 4
    snap = checkpoints.load(tmp_path)
    assert snap["step"] == 0 and snap["source"]["tf_checkpoint"] == str(PREFIX)
    assert snap["trained_scope"] == [
        "encoder.backbone.",
        "encoder.tokenizer.",
        "encoder.transformer.",
    ]
    assert snap["ema"].keys() == snap["model"].keys()
    cfg = snap["config"]
    assert cfg["model.encoder.input_norm"] == "none" and cfg["model.encoder.depths"] == [1, 2, 1]
    assert cfg["model.encoder.stem_pool"] == "tf_same"
    model = build_model(from_flat(cfg))
    missing, unexpected = model.load_state_dict(snap["ema"], strict=False)
    assert unexpected == []
    in_scope = [k for k in missing if k.startswith(tuple(snap["trained_scope"]))]
    assert all(k.endswith("num_batches_tracked") for k in in_scope)
    assert any(k.startswith("decoder.") for k in missing)
    stem = tf_value(expected, "resnet/initial_conv_relu_max_pool/2/bn/moving_mean")
    np.testing.assert_array_equal(model.encoder.backbone.bn1.running_mean, stem)


def copied_fixture(tmp_path: Path) -> Path:
    for f in FIXTURE.glob("ckpt-1.*"):
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "ckpt-1"


def test_a_truncated_data_file_is_named_with_the_tensor(tmp_path):
    prefix = copied_fixture(tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="data-00000-of-00001: tensor .* truncated"):
        converted_state(TFCheckpoint(prefix))


def test_a_damaged_tensor_fails_its_checksum(tmp_path, ckpt):
    prefix = copied_fixture(tmp_path)
    entry = ckpt.entries[ENC + "stem_ln/gamma" + TAIL]
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="stem_ln/gamma.*CRC-32C"):
        TFCheckpoint(prefix).read(entry.name)


def test_a_file_that_is_no_index_is_refused(tmp_path):
    prefix = copied_fixture(tmp_path)
    Path(f"{prefix}.index").write_bytes(b"not a table" * 10)
    with pytest.raises(CheckpointError, match=r"ckpt-1\.index: not a TensorFlow checkpoint"):
        TFCheckpoint(prefix)


def test_variables_the_config_needs_but_the_checkpoint_lacks_are_named(ckpt):
    with pytest.raises(CheckpointError, match="missing the encoder variables.*enc_layers/2/mha"):
        converted_state(ckpt, tiny_config(**{"model.encoder.tf_layers": "3"}))


def test_encoder_variables_the_config_has_no_place_for_are_named(ckpt):
    with pytest.raises(CheckpointError, match="no place.*block_groups/1/layers/1/"):
        converted_state(ckpt, tiny_config(**{"model.encoder.depths": "1,1,1"}))


def test_other_attention_heads_are_refused(ckpt):
    with pytest.raises(CheckpointError, match="has 4 attention heads.*tf_heads=8"):
        converted_state(ckpt, tiny_config(**{"model.encoder.tf_heads": "8"}))


def test_shapes_that_do_not_fit_the_model_are_named(tmp_path, ckpt):
    job = load_job("convert_official")
    sets = [a for k, v in SIZES.items() for a in ("--set", f"{k}={v}")]
    sets += ["--set", "model.encoder.tf_mlp=48"]
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.fc1\.weight: converted \(64, 32\)"):
        job.main(
            ["-q", "--tf-checkpoint", str(PREFIX), "--out", str(tmp_path), "--preset", "tiny"]
            + sets
        )
    assert not (tmp_path / "checkpoint.pt").exists()


def test_the_ema_copy_of_a_panoptic_checkpoint_is_preferred():
    stem = "resnet/initial_conv_relu_max_pool/0/conv2d/kernel" + TAIL
    both = SimpleNamespace(entries={f"model/encoder/{stem}": 0, f"model/encoder_ema/{stem}": 0})
    assert encoder_root(both) == "model/encoder_ema/"
    assert encoder_root(SimpleNamespace(entries={f"model/encoder/{stem}": 0})) == ENC
    with pytest.raises(CheckpointError, match="no official image encoder"):
        encoder_root(SimpleNamespace(entries={}, index_path="x.index"))


def test_unused_tensors_are_grouped_by_owner():
    names = (
        "model/decoder/ar_decoder.Stoken_embedding" + TAIL,
        "model/decoder/decoder/dec_layers/0/self_ln/beta" + TAIL,
        "model/encoder/stem_ln/beta/.OPTIMIZER_SLOT/optimizer/m" + TAIL,
        "optimizer/beta_1" + TAIL,
        "optimizer/iter" + TAIL,
        "_CHECKPOINTABLE_OBJECT_GRAPH",
    )
    assert unused_groups(names) == {
        "_CHECKPOINTABLE_OBJECT_GRAPH": 1,
        "model/decoder": 2,
        "model/encoder (optimizer slots)": 1,
        "optimizer": 2,
    }
