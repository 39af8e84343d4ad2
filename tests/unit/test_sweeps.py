"""Sweeps as data (the four paper ablations), grid and flag parsing, the summary tables and
plot, and the inference grid: one encoder pass for the whole grid, the same label maps as
one-setting-at-a-time prediction."""

import csv
import io
import json
import pickle

import numpy as np
import pytest
from helpers_ckpt import image_config, write_checkpoint
from PIL import Image

from pix2seqd.platform.config import override
from pix2seqd.platform.presets import tiny
from pix2seqd.platform.sweep import report
from pix2seqd.platform.sweep.cli import parse_values
from pix2seqd.platform.sweep.spec import (
    VIDEO_SCORES,
    Axis,
    Sweep,
    SweepKind,
    check_sweep,
    checkpoint_sweep,
    trial_label,
)


def test_the_four_sweep_files_hold_the_papers_grids():
    from pix2seqd.sweeps import inference, input_scale, loss, loss_weight

    assert input_scale.SWEEP.grid() == [{"diffusion.b_scale": b} for b in (0.03, 0.1, 0.3, 1.0)]
    assert loss.SWEEP.grid() == [{"loss.kind": "l2"}, {"loss.kind": "softmax_ce"}]
    assert loss_weight.SWEEP.grid() == [{"loss.p": p} for p in (0.0, 0.2, 0.4, 0.6)]
    grid = inference.SWEEP.grid()
    assert len(grid) == 6 * 6 * 3
    assert grid[0] == {"sample.steps": 1, "sample.td": 0.0, "sample.min_pixels": 0}
    assert grid[-1] == {"sample.steps": 50, "sample.td": 4.0, "sample.min_pixels": 80}
    for s in (input_scale.SWEEP, loss.SWEEP, loss_weight.SWEEP, inference.SWEEP):
        assert (s.metric, s.mode) == ("val/pq", "max")
        check_sweep(s, tiny())  # every value is valid for its field
    kinds = [s.kind for s in (input_scale.SWEEP, loss.SWEEP, loss_weight.SWEEP, inference.SWEEP)]
    assert kinds == [SweepKind.TRAIN] * 3 + [SweepKind.INFERENCE]
    video = inference.SWEEP.video  # a video checkpoint's grid: later steps, τ_d, adaptive stop
    assert len(video.grid()) == 3 * 2 * 2 and video.scores[0] == "j_and_f"
    assert video.grid()[1] == {
        "sample.later_steps": 2,
        "sample.td": 1.0,
        "sample.adaptive": True,
        "sample.adaptive_change": 0.005,
    }
    check_sweep(video, tiny())


def test_a_checkpoint_gets_its_kinds_grid_and_flags_it_lacks_are_named():
    from pix2seqd.sweeps.inference import SWEEP

    assert checkpoint_sweep(SWEEP, False, {"sample.td": (2.0,)}, "ck").paths == SWEEP.paths
    video = checkpoint_sweep(SWEEP, True, {"sample.adaptive": (True,)}, "ck")
    assert video.name == "inference_video" and len(video.grid()) == 3 * 2
    with pytest.raises(ValueError, match=r"ck is an image model.*sample.later_steps"):
        checkpoint_sweep(SWEEP, False, {"sample.later_steps": (4,)}, "ck")
    with pytest.raises(ValueError, match=r"vk is a video model.*sample.min_pixels"):
        checkpoint_sweep(SWEEP, True, {"sample.min_pixels": (0,)}, "vk")
    image_only = Sweep("s", SweepKind.INFERENCE, (Axis("sample.td", (1.0,)),), "Fig. 6")
    with pytest.raises(ValueError, match="vk is a video model: sweep 's' has no grid"):
        checkpoint_sweep(image_only, True, {}, "vk")


def test_grid_order_values_from_flags_and_labels():
    sweep = Sweep(
        "s",
        SweepKind.INFERENCE,
        (Axis("sample.steps", (1, 2)), Axis("sample.td", (0.0, 1.0))),
        "Fig. 6",
    )
    assert sweep.grid() == [
        {"sample.steps": 1, "sample.td": 0.0},
        {"sample.steps": 1, "sample.td": 1.0},
        {"sample.steps": 2, "sample.td": 0.0},
        {"sample.steps": 2, "sample.td": 1.0},
    ]
    smaller = sweep.with_values({"sample.td": parse_values("sample.td", "2,3")})
    assert smaller.grid()[0] == {"sample.steps": 1, "sample.td": 2.0}
    assert parse_values("loss.kind", "l2, softmax_ce") == ("l2", "softmax_ce")
    assert parse_values("sample.steps", "5") == (5,)
    assert trial_label({"diffusion.b_scale": 0.3, "loss.kind": "l2"}) == "b_scale=0.3,kind=l2"
    with pytest.raises(KeyError, match="no axis"):
        sweep.with_values({"loss.p": (0.1,)})
    with pytest.raises(ValueError, match="sample.steps"):
        parse_values("sample.steps", "five")


def test_an_invalid_grid_value_is_named_before_any_trial():
    bad = Sweep("bad", SweepKind.TRAIN, (Axis("loss.kind", ("l2", "hinge")),), "Table 4")
    with pytest.raises(ValueError, match=r"loss.kind='hinge'"):
        check_sweep(bad, tiny())
    unknown = Sweep("unknown", SweepKind.TRAIN, (Axis("loss.q", (1.0,)),), "none")
    with pytest.raises(ValueError, match="loss.q"):
        check_sweep(unknown, tiny())
    no_plot = Sweep(
        "p", SweepKind.TRAIN, (Axis("loss.p", (0.0,)),), "Table 5", plot_x="diffusion.b_scale"
    )
    with pytest.raises(ValueError, match="plot axis"):
        check_sweep(no_plot, tiny())


def _rows():
    return [
        {
            "run_id": "r1",
            "params": {"loss.p": 0.0},
            "pq": 0.25,
            "pq_th": 0.1,
            "pq_st": 0.4,
            "status": "FINISHED",
        },
        {
            "run_id": "r2",
            "params": {"loss.p": 0.2},
            "pq": 0.375,
            "pq_th": 0.25,
            "pq_st": 0.5,
            "status": "FINISHED",
        },
        {
            "run_id": "r3",
            "params": {"loss.p": 0.4},
            "pq": None,
            "pq_th": None,
            "pq_st": None,
            "status": "FAILED",
        },
    ]


def test_summary_tables_mark_the_best_trial_and_keep_failed_ones():
    sweep = Sweep(
        "loss_weight",
        SweepKind.TRAIN,
        (Axis("loss.p", (0.0, 0.2, 0.4)),),
        "Table 5",
        plot_x="loss.p",
    )
    rows = list(csv.reader(io.StringIO(report.table_csv(sweep, _rows()))))
    assert rows[0] == ["loss.p", "pq", "pq_th", "pq_st", "status", "run_id"]
    assert rows[2] == ["0.2", "0.375000", "0.250000", "0.500000", "FINISHED", "r2"]
    assert rows[3] == ["0.4", "", "", "", "FAILED", "r3"]
    md = report.table_markdown(sweep, _rows()).splitlines()
    assert md[4] == "| 0.0 | 25.0 | 10.0 | 40.0 | FINISHED |"
    assert (
        md[5] == "| **0.2** | **37.5** | **25.0** | **50.0** | **FINISHED** |"
    )  # best, in percent
    assert md[6] == "| 0.4 | – | – | – | FAILED |"
    assert report.best_row(sweep, _rows())["run_id"] == "r2"
    assert report.best_row(Sweep(**{**sweep.__dict__, "mode": "min"}), _rows())["run_id"] == "r1"


def test_a_video_sweeps_table_goes_by_j_and_f_and_prints_steps_as_numbers():
    sweep = Sweep(
        "v",
        SweepKind.INFERENCE,
        (Axis("sample.adaptive", (False, True)),),
        "Fig. 7",
        metric="j_and_f",
        scores=VIDEO_SCORES,
    )
    rows = [
        {"run_id": "a", "params": {"sample.adaptive": False}, "status": "FINISHED",
         **dict(zip(VIDEO_SCORES, (0.5, 0.6, 0.4, 8.0, 160.0)))},
        {"run_id": "b", "params": {"sample.adaptive": True}, "status": "FINISHED",
         **dict(zip(VIDEO_SCORES, (0.55, 0.5, 0.6, 6.82, 147.25)))},
    ]  # fmt: skip
    md = report.table_markdown(sweep, rows).splitlines()
    assert (
        md[2]
        == "| sample.adaptive | J&F | J | F | mean_later_steps | predict_ms_per_frame | status |"
    )
    assert md[4] == "| False | 50.0 | 60.0 | 40.0 | 8.00 | 160.00 | FINISHED |"
    assert md[5].startswith("| **True** | **55.0** |") and "**6.82** | **147.25**" in md[5]
    assert report.best_row(sweep, rows)["run_id"] == "b"
    header = next(csv.reader(io.StringIO(report.table_csv(sweep, rows))))
    assert header == ["sample.adaptive", *VIDEO_SCORES, "status", "run_id"]


@pytest.mark.parametrize(
    "axes,x,series",
    [
        ((Axis("loss.p", (0.0, 0.2, 0.4)),), "loss.p", ""),
        ((Axis("loss.kind", ("l2", "softmax_ce")),), "loss.kind", ""),
        (
            (
                Axis("sample.steps", (1, 10)),
                Axis("sample.td", (1.0, 2.0)),
                Axis("sample.min_pixels", (0, 40)),
            ),
            "sample.steps",
            "sample.td",
        ),
    ],
)
def test_plots_are_written_for_numbers_categories_and_facets(tmp_path, axes, x, series):
    sweep = Sweep("s", SweepKind.TRAIN, axes, "paper", plot_x=x, plot_series=series)
    rows = [
        {"run_id": str(k), "params": p, "pq": 0.1 * k, "status": "FINISHED"}
        for k, p in enumerate(sweep.grid())
    ]
    path = report.plot(sweep, rows, tmp_path / "plot.png")
    width, height = Image.open(path).size
    facets = 2 if series else 1  # the min_pixels axis becomes one panel per value
    assert height > 0 and width == pytest.approx(facets * 4.5 * 110, abs=2)


def _checkpoint_and_images(tmp_path):
    from pix2seqd.platform.evaluation.predict import load_for_inference

    cfg = image_config(5)
    ckpt = write_checkpoint(tmp_path / "ckpt", cfg, seed=3)
    model, _ = load_for_inference(str(ckpt))
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (40, 56, 3), dtype=np.uint8),
        rng.integers(0, 256, (48, 32, 3), dtype=np.uint8),
    ]
    return model, cfg, images, ckpt


def test_inference_grid_encodes_once_and_matches_one_setting_at_a_time(tmp_path):
    from pix2seqd.platform.evaluation.predict import predict_label_maps
    from pix2seqd.platform.sweep.inference_sweep import sample_grid

    model, cfg, images, _ = _checkpoint_and_images(tmp_path)
    grid = Sweep(
        "g",
        SweepKind.INFERENCE,
        (
            Axis("sample.steps", (1, 3)),
            Axis("sample.td", (0.0, 2.0)),
            Axis("sample.min_pixels", (0, 60)),
        ),
        "Fig. 6",
    ).grid()
    encode, sample = model.encode, model.sample_from_encoded
    calls = {"encode": 0, "sample": 0}

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return wrapped

    model.encode, model.sample_from_encoded = count("encode", encode), count("sample", sample)
    out = sample_grid(model, cfg, images, grid, seed=11)
    assert calls == {"encode": 1, "sample": 4}  # 8 grid points: 4 (steps, td) pairs, 1 encoder pass
    model.encode, model.sample_from_encoded = encode, sample
    for point, maps in zip(grid, out):
        s = override(cfg, point).sample
        alone = predict_label_maps(model, cfg, images, s.steps, s.td, s.min_pixels, seed=11)
        assert all(np.array_equal(a, b) for a, b in zip(maps, alone)), point
        assert [m.shape for m in maps] == [(2, 40, 56), (2, 48, 32)]
    # min_pixels only post-processes: 60 px removes segments that 0 keeps
    assert sum(int((m[1] > 0).sum()) for m in out[1]) <= sum(int((m[1] > 0).sum()) for m in out[0])


def test_grid_predictor_returns_the_pngs_eval_coco_writes(tmp_path):
    from pix2seqd.platform.config import flatten
    from pix2seqd.platform.data.coco_panoptic import CategoryMap
    from pix2seqd.platform.evaluation.predict import Predictor
    from pix2seqd.platform.sweep.inference_sweep import GridPredictor

    _, cfg, images, ckpt = _checkpoint_and_images(tmp_path)
    cats = [{"id": i, "name": f"c{i}", "isthing": int(i % 2)} for i in (1, 2, 3, 4)]
    cmap = CategoryMap.from_coco(cats, "test")
    for k, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"{k}.jpg", quality=95)
    batch = {
        "image_id": np.array([7, 8]),
        "image_path": np.array([str(tmp_path / f"{k}.jpg") for k in (0, 1)]),
        "name": np.array(["a", "b"]),
    }
    point = {"sample.steps": cfg.sample.steps, "sample.td": cfg.sample.td, "sample.min_pixels": 0}
    grid_out = GridPredictor(str(ckpt), flatten(cfg), [point], cmap)(dict(batch))
    single = Predictor(str(ckpt), cfg.sample.steps, cfg.sample.td, 0, str(tmp_path / "pred"), cmap)(
        dict(batch)
    )
    for name, results, ann in zip(("a", "b"), grid_out["results"], single["annotation"]):
        ((png, info),) = pickle.loads(results)
        assert png == (tmp_path / "pred" / f"{name}.png").read_bytes()
        # the same segments; eval_coco's predictions also carry each segment's score
        assert info == [
            {k: v for k, v in seg.items() if k != "score"}
            for seg in json.loads(ann)["segments_info"]
        ]


def test_trial_config_and_concurrency(monkeypatch):
    import ray

    from pix2seqd.platform.sweep.train_sweep import default_concurrency, trial_config

    cfg = override(tiny(), {"eval.every_steps": 0})  # 2 workers x 0.5 CPU, checkpoint every 400
    assert trial_config(cfg, asha=False).eval.every_steps == 0
    assert trial_config(cfg, asha=True).eval.every_steps == 400  # ASHA needs val/pq in training
    # every checkpoint report must carry val/pq, or Tune refuses it
    assert trial_config(override(cfg, {"eval.every_steps": 800}), asha=True).eval.every_steps == 400
    assert trial_config(tiny(), asha=False).eval.every_steps == 400  # the preset's, kept
    # per trial: 1 CPU of workers + 0.1 trial + 1 for data/eval = 2.1
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0})
    assert default_concurrency(cfg, 0.1) == 1
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 4.0})
    assert default_concurrency(cfg, 0.1) == 30
    gpu = override(cfg, {"train.use_gpu": True, "train.num_workers": 1})
    assert default_concurrency(gpu, 0.1) == 4  # GPUs bound it: 1 per trial


def test_the_same_command_makes_the_same_sweep_key(tmp_path):
    from pix2seqd.platform.sweep.resume import sweep_key
    from pix2seqd.platform.train.options import RunOptions
    from pix2seqd.sweeps.loss import SWEEP

    run = RunOptions(preset="tiny", storage_path=str(tmp_path))
    key = sweep_key(SWEEP, tiny(), run, asha=False)
    assert key == sweep_key(SWEEP, tiny(), RunOptions("tiny", str(tmp_path)), asha=False)
    others = [
        sweep_key(SWEEP.with_values({"loss.kind": ("l2",)}), tiny(), run, False),
        sweep_key(SWEEP, override(tiny(), {"train.steps": 7}), run, False),
        sweep_key(SWEEP, tiny(), RunOptions("tiny", str(tmp_path / "elsewhere")), False),
        sweep_key(SWEEP, tiny(), RunOptions("r50_ablation", str(tmp_path)), False),
        sweep_key(SWEEP, tiny(), run, asha=True),
    ]
    assert len({key, *others}) == 6


@pytest.fixture(scope="module")
def sqlite_mlflow(tmp_path_factory):
    import mlflow.tracking

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    return mlflow.tracking.MlflowClient(uri)


def test_an_unfinished_parent_is_found_by_its_key(sqlite_mlflow):
    from pix2seqd.platform.sweep.resume import SWEEP_KEY_TAG, unfinished_parent

    mlc = sqlite_mlflow
    exp = mlc.create_experiment("sweeps-resume")
    started = iter(range(1_000, 2_000))

    def parent(key, status):
        run_id = mlc.create_run(exp, next(started), {SWEEP_KEY_TAG: key}).info.run_id
        if status != "RUNNING":
            mlc.set_terminated(run_id, status)
        return run_id

    parent("k1", "FAILED")
    killed = parent("k1", "RUNNING")  # newer: a driver killed mid-way
    parent("k1", "FINISHED")  # newest, but finished: a new sweep then
    parent("k2", "KILLED")
    assert unfinished_parent(mlc, "k1", "sweeps-resume").info.run_id == killed
    assert unfinished_parent(mlc, "k2", "sweeps-resume").info.status == "KILLED"
    assert unfinished_parent(mlc, "k3", "sweeps-resume") is None


def test_tune_experiment_uri_and_what_restores(tmp_path):
    from pix2seqd.platform.sweep.resume import experiment_uri, restorable

    assert experiment_uri("/data/ray/", "sweep-loss-abc") == "/data/ray/sweep-loss-abc"
    assert (
        experiment_uri("s3://b/ray?endpoint_override=h:9000", "sweep-loss-abc")
        == "s3://b/ray/sweep-loss-abc?endpoint_override=h:9000"
    )
    exp = tmp_path / "sweep-loss-abc"
    assert not restorable(str(exp))  # nothing there
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"tuner")
    assert not restorable(str(exp))  # killed before Tune saved its first state
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    assert restorable(str(exp))


def _run(run_id: str, start: int, status: str = "RUNNING", **params):
    from types import SimpleNamespace

    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, start_time=start, status=status),
        data=SimpleNamespace(params={**params, "train.steps": "20"}, metrics={}, tags={}),
    )


def test_a_trial_finds_its_earlier_run_by_its_grid_point():
    from pix2seqd.platform.sweep.resume import earlier_trial_run

    runs = [
        _run("old", 1, "FAILED", **{"diffusion.b_scale": "0.1"}),
        _run("new", 2, "RUNNING", **{"diffusion.b_scale": "0.1"}),  # a later attempt
        _run("other", 3, "FINISHED", **{"diffusion.b_scale": "0.3"}),
        _run("no_param", 4),
    ]
    # Tune's typed values against MLflow's strings
    assert earlier_trial_run(runs, {"diffusion.b_scale": 0.1}).info.run_id == "new"
    assert earlier_trial_run(runs, {"diffusion.b_scale": 0.3}).info.run_id == "other"
    assert earlier_trial_run(runs, {"diffusion.b_scale": 1.0}) is None
    kinds = [_run("ce", 1, **{"loss.kind": "softmax_ce"})]
    assert earlier_trial_run(kinds, {"loss.kind": "softmax_ce"}).info.run_id == "ce"
    assert earlier_trial_run(kinds, {"loss.kind": "l2"}) is None


def test_tune_starts_a_trial_again_a_finite_number_of_times():
    from pix2seqd.platform.sweep.train_sweep import trial_retries

    def t(**sets):
        return override(tiny(), {f"train.{k}": v for k, v in sets.items()}).train

    assert trial_retries(t(max_failures=2)) == 2
    assert trial_retries(t(max_failures=0)) == 0
    assert trial_retries(t(max_failures=-1, crash_loop_limit=4)) == 4  # unlimited: bounded
    assert trial_retries(t(max_failures=-1, crash_loop_limit=0)) == -1  # no limit asked for


def test_failed_trials_get_a_row_even_without_a_run(sqlite_mlflow):
    from types import SimpleNamespace

    from pix2seqd.platform.sweep.train_sweep import TRIAL_TAG, failed_trials, trial_rows

    mlc = sqlite_mlflow
    exp = mlc.create_experiment("sweeps-rows")
    parent = mlc.create_run(exp).info.run_id
    sweep = Sweep("s", SweepKind.TRAIN, (Axis("loss.p", (0.0, 0.2, 0.4)),), "Table 5")

    def child(p, status, pq=None):
        tags = {"mlflow.parentRunId": parent, TRIAL_TAG: f"t{p}"}
        run_id = mlc.create_run(exp, tags=tags).info.run_id
        mlc.log_param(run_id, "loss.p", str(p))
        if pq is not None:
            mlc.log_metric(run_id, "val/pq", pq)
        mlc.set_terminated(run_id, status)
        return run_id

    done = child(0.0, "FINISHED", 0.5)
    crashed = child(0.4, "FAILED")  # failed in training: its run says so
    err = RuntimeError("data folder missing")
    grid = [
        SimpleNamespace(error=None, metrics={"trial_id": "t0.0", "config": {"loss.p": 0.0}}),
        SimpleNamespace(error=err, metrics={"trial_id": "t0.2", "config": {"loss.p": 0.2}}),
        SimpleNamespace(error=err, metrics={"trial_id": "t0.4", "config": {"loss.p": 0.4}}),
    ]
    failed = failed_trials(grid)
    assert failed == [({"loss.p": 0.2}, err), ({"loss.p": 0.4}, err)]
    rows = trial_rows(mlc, sweep, parent, {"t0.0"}, [p for p, _ in failed])
    assert [(r["params"], r["run_id"], r["status"], r["pq"]) for r in rows] == [
        ({"loss.p": 0.0}, done, "FINISHED", 0.5),
        ({"loss.p": 0.2}, None, "FAILED", None),  # failed before its run was made
        ({"loss.p": 0.4}, crashed, "FAILED", None),
    ]
    assert report.table_csv(sweep, rows).splitlines()[2] == "0.2,,,,FAILED,"


def test_the_same_command_continues_its_unfinished_parent_run(sqlite_mlflow, tmp_path):
    """A new parent run, the same one again once it stopped unfinished (claimed by the new
    driver), refused while another driver holds it, and a new one with --fresh."""
    import time

    from pix2seqd.platform.sweep.resume import SWEEP_KEY_TAG
    from pix2seqd.platform.sweep.run import _train_parent
    from pix2seqd.platform.sweep.train_sweep import TrainSweepOptions
    from pix2seqd.platform.train.options import RunOptions
    from pix2seqd.platform.train.run_lock import (
        HEARTBEAT_TAG,
        ID_TAG,
        DriverLease,
        Holder,
        LeaseTiming,
        RunLockedError,
    )
    from pix2seqd.sweeps.loss import SWEEP

    mlc = sqlite_mlflow
    opts = TrainSweepOptions(run=RunOptions(storage_path=str(tmp_path), experiment="parents"))
    fast = LeaseTiming(heartbeat_s=0.1, stale_s=60.0, settle_s=0.1)
    first_driver = DriverLease(mlc, fast)
    first, restore = _train_parent(mlc, SWEEP, tiny(), opts, first_driver)
    assert not restore and SWEEP_KEY_TAG in mlc.get_run(first).data.tags
    with first_driver.kept(first):  # the sweep ran, its trials failed: the lease released
        mlc.set_terminated(first, "FAILED")

    lease = DriverLease(mlc, fast)
    again, restore = _train_parent(mlc, SWEEP, tiny(), opts, lease)
    assert (again, restore) == (first, False)  # no Tune state saved under tmp_path
    run = mlc.get_run(first)
    assert run.info.status == "RUNNING" and run.data.tags[ID_TAG] == lease.holder.id

    elsewhere = Holder("another-machine", 4242, "f" * 32, "elsewhere")
    tags = {**elsewhere.tags(), HEARTBEAT_TAG: repr(time.time())}  # a live driver
    for key, value in tags.items():
        mlc.set_tag(first, key, value)
    with pytest.raises(RunLockedError, match=f"another-machine.*parent run {first}.*--fresh"):
        _train_parent(mlc, SWEEP, tiny(), opts, DriverLease(mlc, fast))
    fresh = TrainSweepOptions(run=opts.run, fresh=True)
    new, _ = _train_parent(mlc, SWEEP, tiny(), fresh, DriverLease(mlc, fast))
    assert new != first
