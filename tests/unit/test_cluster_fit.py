"""platform/cluster_fit.py on cluster.yaml's own node types: which training requests the
cluster can ever place, and the refusal of one it cannot, before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pix2seqd.platform import cluster_fit
from pix2seqd.platform.cluster_fit import (
    autoscaler_node_kinds,
    check_training_fits,
    live_node_kinds,
    placement_problem,
)
from pix2seqd.platform.config import Placement, override
from pix2seqd.platform.presets import get_preset

ROOT = Path(__file__).resolve().parents[2]
GPU_WORKER = {"CPU": 1.0, "GPU": 1.0}


def _cluster_yaml() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _kinds():
    kinds, cap = autoscaler_node_kinds(_cluster_yaml())
    return kinds, cap


def test_node_kinds_are_cluster_yamls_types():
    kinds, cap = _kinds()
    config = _cluster_yaml()
    assert cap == config["max_workers"]
    by_name = {k.name: k for k in kinds}
    for name, spec in config["available_node_types"].items():
        assert dict(by_name[name].resources) == spec["resources"]
        assert by_name[name].count == (1 if name == "head" else spec["max_workers"])
        assert by_name[name].capped == (name != "head")


@pytest.mark.parametrize(
    "n,strategy,fits",
    [
        (8, Placement.STRICT_PACK, True),  # one gpu_8x node
        (9, Placement.STRICT_PACK, False),  # no type has 9 GPUs
        (16, Placement.PACK, True),  # two gpu_8x nodes
        (24, Placement.SPREAD, True),  # 2 x 8 + 8 x 1 GPUs
        (25, Placement.PACK, False),
        (10, Placement.STRICT_SPREAD, True),  # 2 gpu_8x + 8 gpu_1x nodes
        (11, Placement.STRICT_SPREAD, False),
    ],
)
def test_gpu_workers_against_cluster_yaml(n, strategy, fits):
    kinds, cap = _kinds()
    assert (placement_problem(GPU_WORKER, n, strategy, kinds, cap) == "") is fits


def test_the_overall_max_workers_caps_the_nodes():
    kinds, _ = _kinds()
    # 14 worker nodes at most: 2 gpu_8x + 8 gpu_1x + 4 cpu_data, 8-CPU workers one a node
    worker = {"CPU": 8.0}
    assert placement_problem(worker, 14, Placement.STRICT_SPREAD, kinds, 14) == ""
    assert "more nodes" in placement_problem(worker, 14, Placement.STRICT_SPREAD, kinds, 13)
    assert "no node can hold one worker" in placement_problem(
        {"CPU": 97.0}, 1, Placement.PACK, kinds, 14
    )
    assert placement_problem({"CPU": 0.0}, 50, Placement.PACK, kinds, 14) == ""


def test_unknown_resources_and_live_nodes():
    config = _cluster_yaml()
    del config["available_node_types"]["gpu_1x"]["resources"]  # filled in from EC2 by Ray
    assert autoscaler_node_kinds(config) is None
    nodes = [
        {"NodeID": "a" * 56, "Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}},
        {"NodeID": "b" * 56, "Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    kinds = live_node_kinds(nodes)
    assert [(k.resources["GPU"], k.count) for k in kinds] == [(2.0, 1)]
    assert placement_problem(GPU_WORKER, 2, Placement.STRICT_PACK, kinds, 1) == ""
    assert placement_problem(GPU_WORKER, 3, Placement.PACK, kinds, 1) != ""


def test_a_request_no_node_type_holds_is_refused_naming_it(tmp_path, monkeypatch):
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump(_cluster_yaml()))
    monkeypatch.setattr(cluster_fit, "AUTOSCALER_CONFIG", str(config))
    base = override(get_preset("coco_lowres"), {"train.use_gpu": "true"})
    packed = {"train.placement_strategy": "STRICT_PACK"}
    check_training_fits(override(base, {**packed, "train.num_workers": 8}))
    with pytest.raises(ValueError) as err:
        check_training_fits(override(base, {**packed, "train.num_workers": 16}))
    text = str(err.value)
    assert "train.num_workers=16" in text and "STRICT_PACK" in text
    assert "gpu_8x {CPU: 96, GPU: 8} x2" in text and "gpu_1x {CPU: 8, GPU: 1} x8" in text
    # CPU workers: 16 of 16 CPUs each fit one a node (4 cpu_data, 2 gpu_8x holding 6 each)
    cpu = override(base, {"train.use_gpu": "false", "train.cpus_per_worker": 16.0})
    check_training_fits(override(cpu, {"train.num_workers": 16}))
