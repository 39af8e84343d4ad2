"""Distributed prediction with Ray Data: the model is loaded once per actor, the encoder runs
once per image, the DDIM sampler then the post-processing (majority vote, min_pixels) run,
and each actor writes COCO-panoptic result PNGs; rows carry the annotations back."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2seqd.models.postprocess import majority_vote, to_original
from pix2seqd.platform.config import Config, from_flat
from pix2seqd.platform.data.coco_panoptic import CategoryMap
from pix2seqd.platform.data.pipeline import eval_inputs, image_seed
from pix2seqd.platform.evaluation.panoptic_io import write_prediction
from pix2seqd.platform.train import checkpoint as ckpt_io
from pix2seqd.platform.train.checkpoints import resolve_checkpoint
from pix2seqd.platform.train.step import build_model, to_model_inputs


def load_for_inference(checkpoint_dir: str, device: str = "cpu") -> tuple[torch.nn.Module, Config]:
    """Model with the checkpoint's EMA weights (what evaluation uses), in eval mode."""
    snap = ckpt_io.load(checkpoint_dir)
    cfg = from_flat(snap["config"])
    model = build_model(cfg)
    model.load_state_dict(snap["ema"])
    return model.to(device).eval(), cfg


def checkpoint_info(checkpoint_dir: str) -> tuple[Config, dict[str, Any]]:
    """(config, meta) of a checkpoint without reading its weights into memory (mmap).

    meta: 'step', 'mlflow_run_id', 'tracking_uri', 'categories' (COCO list; empty for
    checkpoints written before they were recorded)."""
    snap = ckpt_io.load(checkpoint_dir, mmap=True)
    meta = {k: snap.get(k, d) for k, d in (("step", 0), ("mlflow_run_id", ""),
                                            ("tracking_uri", ""), ("categories", []))}
    return from_flat(snap["config"]), meta


class Predictor:
    """Ray Data callable class: rows {'image_id', 'image_path', 'name'} -> annotations; the
    result PNG of a row is `<pred_dir>/<name>.png`."""

    def __init__(self, checkpoint: str, steps: int, td: float, min_pixels: int,
                 pred_dir: str, cmap: CategoryMap, seed: int = 0, threads: int = 0,
                 use_gpu: bool = False):
        if threads > 0:
            torch.set_num_threads(threads)
        # Only a GPU Ray reserved for this actor; a visible one may belong to someone else.
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        # a folder or storage URI: each actor fetches it on its own node
        self.model, self.cfg = load_for_inference(resolve_checkpoint(checkpoint), self.device)
        self.steps, self.td, self.min_pixels = steps, td, min_pixels
        self.pred_dir, self.cmap, self.seed = Path(pred_dir), cmap, seed

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["image_id"]))]
        preds, inputs = self.predict_rows(rows)
        anns = []
        for row, pred, inp in zip(rows, preds, inputs):
            label = self.postprocess(pred, inp)
            anns.append(json.dumps(write_prediction(label, self.cmap, plain_id(row["image_id"]),
                                                    self.pred_dir, str(row["name"]), layout="2hw")))
        return {"image_id": batch["image_id"], "annotation": np.array(anns, dtype=object)}

    def predict_rows(self, rows: list[dict[str, Any]]):
        """Sample (class, id) maps at mask resolution: list of (2, Hm, Wm) int64 CPU tensors."""
        size = self.cfg.data.image_size
        inputs = [eval_inputs(r, size, size // self.cfg.model.mask_stride) for r in rows]
        batch = {"image": torch.from_numpy(np.stack([i["image"] for i in inputs])),
                 "hw": torch.from_numpy(np.stack([i["hw"] for i in inputs])),
                 "mask": torch.zeros(len(rows), 1, 1, 2, dtype=torch.uint8)}
        images, _, _ = to_model_inputs(batch, self.device, self.cfg.data.pad_value)
        seed = self.seed * 1_000_003 + image_seed(rows[0]["image_id"])
        gen = torch.Generator(device=self.device).manual_seed(seed)
        pred = self.model.sample(images, self.steps, self.td, generator=gen)
        return list(pred.cpu()), inputs

    def postprocess(self, pred: torch.Tensor, inp: dict[str, np.ndarray]) -> np.ndarray:
        """(2, Hm, Wm) -> (2, H, W) at the original size, majority vote and min_pixels applied."""
        size = self.cfg.data.image_size
        full = to_original(pred, (size, size), tuple(int(v) for v in inp["hw"]),
                           tuple(int(v) for v in inp["orig_hw"]))
        out = majority_vote(full, self.cfg.model.num_classes, self.cfg.model.max_instances,
                            self.min_pixels)
        return out.numpy()


def plain_id(value: Any) -> int | str:
    """A Ray Data image id (numpy scalar) as JSON can hold it: COCO int, Cityscapes str."""
    return int(value) if isinstance(value, (int, np.integer)) else str(value)


def predict_dataset(items: list[dict[str, Any]], checkpoint: str, pred_dir: str,
                    cmap: CategoryMap, steps: int, td: float, min_pixels: int,
                    batch_size: int, num_actors: int, use_gpu: bool, seed: int = 0) -> list[dict]:
    """Run `Predictor` actors over `items`; returns the results-format annotations."""
    import ray.data

    from pix2seqd.platform.ray_env import inference_actors

    Path(pred_dir).mkdir(parents=True, exist_ok=True)
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(64, len(items) // batch_size)))
    ds = ds.map_batches(
        Predictor, batch_size=batch_size, batch_format="numpy",
        concurrency=inference_actors(num_actors, use_gpu),
        num_gpus=1 if use_gpu else 0, num_cpus=1,
        fn_constructor_kwargs=dict(checkpoint=checkpoint, steps=steps, td=td,
                                   min_pixels=min_pixels, pred_dir=pred_dir, cmap=cmap,
                                   seed=seed, threads=0 if use_gpu else 1, use_gpu=use_gpu),
    )
    return [json.loads(r["annotation"]) for r in ds.take_all()]
