from __future__ import annotations

import pytest

from pix2seqd.models.config import Conditioning, LossKind
from pix2seqd.platform.config import Config, flatten, from_flat, override, parse_overrides
from pix2seqd.platform.presets import PRESETS, get_preset


def test_dotted_overrides_parse_by_field_type():
    cfg = override(
        Config(),
        parse_overrides(
            [
                "optim.lr=1e-5",
                "loss.kind=l2",
                "loss.p=0.4",
                "sample.steps=10",
                "sample.td=1.5",
                "model.encoder.depths=2,2,2",
                "data.hflip=false",
                "model.decoder.conditional=none",
                "data.scale_jitter=(0.5, 2)",
            ]
        ),
    )
    assert cfg.optim.lr == 1e-5 and cfg.loss.kind is LossKind.L2 and cfg.loss.p == 0.4
    assert cfg.sample.steps == 10 and cfg.sample.td == 1.5
    assert cfg.model.encoder.depths == (2, 2, 2)
    assert cfg.data.hflip is False and cfg.data.scale_jitter == (0.5, 2.0)
    assert cfg.model.decoder.conditional is Conditioning.NONE
    assert Config().optim.lr == 1e-4  # frozen defaults untouched


def test_bad_overrides_name_the_key():
    with pytest.raises(KeyError, match="optim.lrr"):
        override(Config(), {"optim.lrr": "1"})
    with pytest.raises(ValueError, match="sample.steps"):
        override(Config(), {"sample.steps": "many"})
    with pytest.raises(ValueError, match="loss.kind"):
        override(Config(), {"loss.kind": "hinge"})
    with pytest.raises(KeyError, match="is a group"):
        override(Config(), {"optim": "1"})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["optim.lr"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_flatten_round_trips_every_preset(name):
    cfg = get_preset(name)
    flat = flatten(cfg)
    assert from_flat(flat) == cfg
    # MLflow params are strings: the string form must parse back too
    assert (
        from_flat(
            {k: ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for k, v in flat.items()}
        )
        == cfg
    )


def test_cli_paths_of_the_contract_exist():
    flat = flatten(Config())
    for key in (
        "diffusion.b_scale",
        "loss.kind",
        "loss.p",
        "sample.steps",
        "sample.td",
        "sample.min_pixels",
        "optim.lr",
        "model.encoder.init",
    ):
        assert key in flat
    assert (
        flat["diffusion.b_scale"] == 0.1
        and flat["loss.p"] == 0.2
        and flat["loss.kind"] == "softmax_ce"
    )


def test_paper_presets_follow_the_official_configs():
    low, high = get_preset("coco_lowres"), get_preset("coco_highres")
    assert (low.data.image_size, low.train.batch_size, low.train.steps) == (256, 512, 184_824)
    assert (low.optim.lr, low.optim.warmup_steps, low.data.scale_jitter) == (1e-4, 1155, (1.0, 3.0))
    assert (high.data.image_size, high.train.batch_size, high.optim.lr) == (1024, 16, 1e-5)
    assert high.data.color_jitter == 0.0 and high.optim.warmup_steps == 0
    assert get_preset("decoder_pretrain").model.decoder.conditional is Conditioning.NONE
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("huge")
