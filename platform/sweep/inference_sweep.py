"""Inference sweeps (paper Fig. 6): one checkpoint, a grid of sampler settings.

Ray Data spreads the images over `GridPredictor` actors (one per GPU, or per CPU but one,
as for evaluation). An actor runs the encoder once per image batch and keeps the features
for the whole grid: each (steps, τ_d) pair is sampled once, from the same noise for every
pair (common random numbers: differences between settings are not noise), and each
min_pixels value only changes the post-processing of those samples. The actors return the
result PNGs as bytes, so they may run on any node; the driver writes one results folder per
grid point and scores each with the evaluation's PQ code. Batches and seeds are those of
`eval_coco --checkpoint`, so the grid point equal to its sampler settings scores the same.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2seqd.models.postprocess import majority_vote
from pix2seqd.platform.config import Config, EvalConfig, flatten, from_flat, override
from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord
from pix2seqd.platform.data.pipeline import image_seed, read_rgb
from pix2seqd.platform.evaluation.coco_eval import predict_item, scoring_ids, subset_gt
from pix2seqd.platform.evaluation.panoptic_io import encode_prediction, write_predictions_json
from pix2seqd.platform.evaluation.pq import pq_compute
from pix2seqd.platform.evaluation.predict import (
    at_original_size,
    canvas_batch,
    load_for_inference,
    map_with_actors,
    plain_id,
)
from pix2seqd.platform.evaluation.sampling import sampling_autocast


@torch.no_grad()
def sample_grid(
    model: torch.nn.Module,
    cfg: Config,
    images: list[np.ndarray],
    grid: Sequence[dict[str, Any]],
    seed: int,
) -> list[list[np.ndarray]]:
    """For each grid point (dotted sample.* overrides of `cfg`), the (2, h, w) label maps of
    `images`, as `predict.predict_label_maps` would give them one setting at a time."""
    x, inputs = canvas_batch(model, cfg, images)
    settings = [override(cfg, point).sample for point in grid]
    full: dict[tuple[int, float], list[torch.Tensor]] = {}
    with sampling_autocast(cfg, x.device):
        encoded = model.encode(x)  # once for the whole grid
        for s in settings:
            if (s.steps, s.td) not in full:
                gen = torch.Generator(device=x.device).manual_seed(seed)
                pred = model.sample_from_encoded(encoded, s.steps, s.td, generator=gen).cpu()
                full[(s.steps, s.td)] = at_original_size(pred, inputs, cfg)
    m = cfg.model
    return [
        [
            majority_vote(f, m.num_classes, m.max_instances, s.min_pixels).numpy()
            for f in full[(s.steps, s.td)]
        ]
        for s in settings
    ]


class GridPredictor:
    """Ray Data callable class: rows {'image_id', 'image_path', 'name'} -> 'results', a
    pickled list over the grid of (PNG bytes, segments_info)."""

    def __init__(
        self,
        checkpoint: str,
        flat_cfg: dict[str, Any],
        grid: list[dict[str, Any]],
        cmap: CategoryMap,
        seed: int = 0,
        threads: int = 0,
        use_gpu: bool = False,
    ):
        if threads > 0:
            torch.set_num_threads(threads)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.cfg, self.grid, self.cmap, self.seed = from_flat(flat_cfg), grid, cmap, seed
        self.model, _ = load_for_inference(checkpoint, device, self.cfg.sample)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [str(n) for n in batch["name"]]
        images = [read_rgb(p) for p in batch["image_path"]]
        seed = self.seed * 1_000_003 + image_seed(batch["image_id"][0])
        per_point = sample_grid(self.model, self.cfg, images, self.grid, seed)
        results = [
            pickle.dumps(
                [
                    encode_prediction(labels[i], self.cmap, name, layout="2hw")
                    for labels in per_point
                ]
            )
            for i, name in enumerate(names)
        ]
        return {
            "image_id": batch["image_id"],
            "name": batch["name"],
            "results": np.array(results, dtype=object),
        }


def evaluate_grid(
    checkpoint: str,
    cfg: Config,
    grid: list[dict[str, Any]],
    records: Sequence[PanopticRecord],
    cmap: CategoryMap,
    gt: tuple[Path, Path],
    work_dir: Path,
    ev: EvalConfig,
    use_gpu: bool,
) -> tuple[list[dict], dict]:
    """R.json-style results, one per grid point in order, and {'predict_s', 'score_s'}.
    Prediction folders go to `work_dir/gNNN/`."""

    chosen = list(records[: ev.max_images] if ev.max_images > 0 else records)
    ids = scoring_ids(chosen)
    t0 = time.perf_counter()
    anns: list[list[dict]] = [[] for _ in grid]
    for row in _predicted_rows(checkpoint, cfg, grid, chosen, cmap, ev, use_gpu):
        for k, (png, info) in enumerate(pickle.loads(row["results"])):
            folder = work_dir / f"g{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{row['name']}.png").write_bytes(png)
            anns[k].append(
                {
                    "image_id": ids[plain_id(row["image_id"])],
                    "file_name": f"{row['name']}.png",
                    "segments_info": info,
                }
            )
    t1 = time.perf_counter()
    gt_json = subset_gt(gt[0], ids, work_dir / "groundtruth.json")
    results = [_score(gt_json, gt[1], work_dir / f"g{k:03d}", a, cmap) for k, a in enumerate(anns)]
    return results, {"predict_s": t1 - t0, "score_s": time.perf_counter() - t1}


def _predicted_rows(checkpoint, cfg, grid, records, cmap, ev: EvalConfig, use_gpu: bool):
    ds = map_with_actors(
        [predict_item(r) for r in records],
        GridPredictor,
        ev.batch_size,
        ev.num_actors,
        use_gpu,
        # seed 0 is eval_coco's: the same samples
        dict(checkpoint=checkpoint, flat_cfg=flatten(cfg), grid=grid, cmap=cmap, seed=0),
    )
    return ds.iter_rows()  # streamed: the driver never holds every grid point's PNGs


def _score(
    gt_json: Path, gt_dir: Path, pred_dir: Path, anns: list[dict], cmap: CategoryMap
) -> dict[str, Any]:
    pred_json = pred_dir / "predictions.json"
    write_predictions_json(pred_json, sorted(anns, key=lambda a: a["image_id"]), cmap)
    return pq_compute(gt_json, pred_json, gt_dir, pred_dir)
