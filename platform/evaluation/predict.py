"""Distributed prediction with Ray Data: the model is loaded once per actor, the encoder runs
once per image, the DDIM sampler then the post-processing (majority vote, min_pixels) run,
and each actor writes COCO-panoptic result PNGs; rows carry the annotations back, each
segment with its confidence `score` (`segment_scores`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2seqd.models.config import SampleConfig
from pix2seqd.models.postprocess import majority_vote, to_original
from pix2seqd.platform.config import Config, from_flat
from pix2seqd.platform.data.coco_panoptic import CategoryMap
from pix2seqd.platform.data.pipeline import image_inputs, image_seed, mask_shape, read_rgb
from pix2seqd.platform.evaluation.panoptic_io import write_prediction
from pix2seqd.platform.evaluation.sampling import prepare_sampler, sample_images
from pix2seqd.platform.evaluation.segment_scores import agreement_map
from pix2seqd.platform.train import checkpoints
from pix2seqd.platform.train.step import build_model, to_model_inputs


def load_for_inference(
    checkpoint: str, device: str = "cpu", sampler: SampleConfig | None = None
) -> tuple[torch.nn.Module, Config]:
    """Model with the EMA weights of the checkpoint `checkpoint` (a CKPT reference), in eval
    mode, and its config; `sampler`: the job's sampler settings, which replace the
    checkpoint's `sample.*` (`compile` and `bf16` among them: `sampling.prepare_sampler`).
    Only the weights are read, not the optimizer; a fetched copy is removed once they are
    loaded (`checkpoints.inference_state`)."""
    with checkpoints.inference_state(checkpoint) as snap:
        cfg = from_flat(snap["config"])
        model = build_model(cfg)
        model.load_state_dict(snap["ema"])
    if sampler is not None:
        cfg = replace(cfg, sample=sampler)
    return prepare_sampler(model.to(device), cfg), cfg


def checkpoint_info(checkpoint: str) -> tuple[Config, dict[str, Any]]:
    """(config, meta) of a checkpoint (CKPT reference) without reading its weights (mmap).

    meta: 'step', 'mlflow_run_id', 'tracking_uri', 'categories' (COCO list; empty for
    checkpoints written before they were recorded)."""
    snap = checkpoints.load_meta(checkpoint)
    meta = {
        k: snap.get(k, d)
        for k, d in (("step", 0), ("mlflow_run_id", ""), ("tracking_uri", ""), ("categories", []))
    }
    return from_flat(snap["config"]), meta


class Predictor:
    """Ray Data callable class: rows {'image_id', 'image_path', 'name'} -> annotations; the
    result PNG of a row is `<pred_dir>/<name>.png`."""

    def __init__(
        self,
        checkpoint: str,
        steps: int,
        td: float,
        min_pixels: int,
        pred_dir: str,
        cmap: CategoryMap,
        seed: int = 0,
        threads: int = 0,
        use_gpu: bool = False,
        sampler: SampleConfig | None = None,
    ):
        if threads > 0:
            torch.set_num_threads(threads)
        # Only a GPU Ray reserved for this actor; a visible one may belong to someone else.
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        # a folder or storage URI: each actor fetches it on its own node
        self.model, self.cfg = load_for_inference(checkpoint, self.device, sampler)
        self.steps, self.td, self.min_pixels = steps, td, min_pixels
        self.pred_dir, self.cmap, self.seed = Path(pred_dir), cmap, seed

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["image_id"]))]
        images = [read_rgb(r["image_path"]) for r in rows]
        seed = batch_seed(self.seed, rows[0]["image_id"])
        scored = predict_scored_label_maps(
            self.model, self.cfg, images, self.steps, self.td, self.min_pixels, seed
        )
        anns = [
            json.dumps(
                write_prediction(
                    label,
                    self.cmap,
                    plain_id(row["image_id"]),
                    self.pred_dir,
                    str(row["name"]),
                    layout="2hw",
                    score_map=score_map,
                )
            )
            for row, (label, score_map) in zip(rows, scored)
        ]
        return {"image_id": batch["image_id"], "annotation": np.array(anns, dtype=object)}


def batch_seed(seed: int, first_id: int | str) -> int:
    """The sampler's seed for a batch whose first image has id `first_id`: a batch of the
    same images gets the same noise in every process that predicts it."""
    return seed * 1_000_003 + image_seed(first_id)


@torch.no_grad()
def predict_label_maps(
    model: torch.nn.Module,
    cfg: Config,
    images: list[np.ndarray],
    steps: int,
    td: float,
    min_pixels: int,
    seed: int,
) -> list[np.ndarray]:
    """RGB images (h, w, 3) uint8 -> (2, h, w) int64 (class, id) maps at each image's size.

    The images are fitted to the canvas (`data.image_hw`) and padded as in training, sampled
    as one batch (the encoder once, then `steps` DDIM steps), then resized back, majority
    vote and `min_pixels` applied. The noise comes from a generator seeded with `seed`."""
    pred, inputs = _sampled(model, cfg, images, steps, td, seed, return_probs=False)
    return [
        majority_vote(full, cfg.model.num_classes, cfg.model.max_instances, min_pixels).numpy()
        for full in at_original_size(pred, inputs, cfg)
    ]


@torch.no_grad()
def predict_scored_label_maps(
    model: torch.nn.Module,
    cfg: Config,
    images: list[np.ndarray],
    steps: int,
    td: float,
    min_pixels: int,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`predict_label_maps` with each image's score map: [((2, h, w) int64 label map,
    (h, w) float32 p_i · [c_i = final class])] (`segment_scores`, whose mean over a segment
    is the segment's score). The probabilities go through the same nearest resize as the
    classes, so each original pixel takes its mask pixel's p_i and c_i."""
    (pred, prob), inputs = _sampled(model, cfg, images, steps, td, seed, return_probs=True)
    out = []
    for full, p in zip(at_original_size(pred, inputs, cfg), at_original_size(prob, inputs, cfg)):
        label = majority_vote(full, cfg.model.num_classes, cfg.model.max_instances, min_pixels)
        label = label.numpy()
        out.append((label, agreement_map(full[0].numpy(), label[0], p.float().numpy())))
    return out


def _sampled(model, cfg: Config, images: list[np.ndarray], steps, td, seed, return_probs):
    """(model.sample of the images on their canvas, with a generator seeded with `seed`,
    on the CPU; the per-image geometry)."""
    x, inputs = canvas_batch(model, cfg, images)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = sample_images(model, cfg, x, steps, td, gen, return_probs)
    return (tuple(t.cpu() for t in out) if return_probs else out.cpu()), inputs


def canvas_batch(
    model: torch.nn.Module, cfg: Config, images: list[np.ndarray]
) -> tuple[torch.Tensor, list[dict[str, np.ndarray]]]:
    """RGB images -> (model input (B, 3, H, W) on the model's device, per-image geometry),
    the canvas (H, W) being `data.image_hw`."""
    device = next(model.parameters()).device
    inputs = [image_inputs(im, cfg.data.image_hw, mask_shape(cfg)) for im in images]
    batch = {
        "image": torch.from_numpy(np.stack([i["image"] for i in inputs])),
        "hw": torch.from_numpy(np.stack([i["hw"] for i in inputs])),
        "mask": torch.zeros(len(images), 1, 1, 2, dtype=torch.uint8),
    }
    x, _, _ = to_model_inputs(batch, device, cfg.data.pad_value)
    return x, inputs


def at_original_size(
    pred: torch.Tensor, inputs: list[dict[str, np.ndarray]], cfg: Config
) -> list[torch.Tensor]:
    """Sampled masks (B, 2, Hm, Wm) -> each image's (2, h, w) at its original size."""
    return [
        to_original(
            p,
            cfg.data.image_hw,
            tuple(int(v) for v in inp["hw"]),
            tuple(int(v) for v in inp["orig_hw"]),
        )
        for p, inp in zip(pred, inputs)
    ]


def plain_id(value: Any) -> int | str:
    """A Ray Data image id (numpy scalar) as JSON can hold it: COCO int, Cityscapes str."""
    return int(value) if isinstance(value, (int, np.integer)) else str(value)


def predict_dataset(
    items: list[dict[str, Any]],
    checkpoint: str,
    pred_dir: str,
    cmap: CategoryMap,
    steps: int,
    td: float,
    min_pixels: int,
    batch_size: int,
    num_actors: int,
    use_gpu: bool,
    seed: int = 0,
    sampler: SampleConfig | None = None,
) -> list[dict]:
    """Run `Predictor` actors over `items`; returns the results-format annotations.
    sampler: the job's sampler settings (`load_for_inference`)."""
    Path(pred_dir).mkdir(parents=True, exist_ok=True)
    ds = map_with_actors(
        items,
        Predictor,
        batch_size,
        num_actors,
        use_gpu,
        dict(
            checkpoint=checkpoint,
            steps=steps,
            td=td,
            min_pixels=min_pixels,
            pred_dir=pred_dir,
            cmap=cmap,
            seed=seed,
            sampler=sampler,
        ),
    )
    return [json.loads(r["annotation"]) for r in ds.take_all()]


def map_with_actors(
    items: list[dict[str, Any]],
    actor_cls: type,
    batch_size: int,
    num_actors: int,
    use_gpu: bool,
    kwargs: dict[str, Any],
):
    """The Ray Data dataset of `items` mapped in batches by `actor_cls(**kwargs, threads,
    use_gpu)` actors (one per GPU, or per CPU but one, unless `num_actors` > 0)."""
    # lazy: the served MLflow model (platform/serving) imports this module without Ray
    import ray.data

    from pix2seqd.platform.ray_env import inference_actors

    ds = ray.data.from_items(items, override_num_blocks=max(1, min(64, len(items) // batch_size)))
    return ds.map_batches(
        actor_cls,
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=inference_actors(num_actors, use_gpu),
        num_gpus=1 if use_gpu else 0,
        num_cpus=1,
        fn_constructor_kwargs={**kwargs, "threads": 0 if use_gpu else 1, "use_gpu": use_gpu},
    )
