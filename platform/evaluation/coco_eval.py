"""COCO-panoptic evaluation of a checkpoint: predict with Ray Data actors, write the
results-format files (each segment with its `score`), score PQ, mIoU and AP^Th_pan against
the GT files (restricted to the predicted images)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pix2seqd.models.config import SampleConfig
from pix2seqd.platform.config import EvalConfig
from pix2seqd.platform.data.coco_panoptic import CategoryMap, PanopticRecord
from pix2seqd.platform.evaluation.beside_pq import beside_pq
from pix2seqd.platform.evaluation.panoptic_io import write_predictions_json
from pix2seqd.platform.evaluation.pq import pq_compute
from pix2seqd.platform.evaluation.predict import predict_dataset


def evaluate_checkpoint(
    checkpoint: str,
    records: Sequence[PanopticRecord],
    cmap: CategoryMap,
    gt_json: Path,
    gt_dir: Path,
    pred_dir: Path,
    sample: SampleConfig,
    ev: EvalConfig,
    use_gpu: bool = False,
) -> dict[str, Any]:
    """Predict `records` (the first `ev.max_images` if > 0) with the checkpoint at
    `checkpoint` (a folder or storage URI every actor can read); return the R.json dict.

    Writes `pred_dir/*.png`, `pred_dir/predictions.json` and the GT restricted to the
    predicted images, `pred_dir/groundtruth.json` (score with it, or the full GT JSON when
    every image was predicted)."""

    chosen = list(records[: ev.max_images] if ev.max_images > 0 else records)
    pred_dir = Path(pred_dir)
    t0 = time.perf_counter()
    anns = predict_dataset(
        [predict_item(r) for r in chosen],
        checkpoint,
        str(pred_dir),
        cmap,
        sample.steps,
        sample.td,
        sample.min_pixels,
        ev.batch_size,
        ev.num_actors,
        use_gpu,
        sampler=sample,
    )
    t1 = time.perf_counter()
    pred_json = pred_dir / "predictions.json"
    numeric = scoring_ids(chosen)
    anns = [{**a, "image_id": numeric[a["image_id"]]} for a in anns]
    write_predictions_json(pred_json, sorted(anns, key=lambda a: a["image_id"]), cmap)
    subset = subset_gt(gt_json, numeric, pred_dir / "groundtruth.json")
    result = pq_compute(subset, pred_json, gt_dir, pred_dir)
    result.update(beside_pq(subset, pred_json, gt_dir, pred_dir))
    result["timing"] = {"predict_s": t1 - t0, "score_s": time.perf_counter() - t1}
    return result


def scoring_ids(records: Sequence[PanopticRecord]) -> dict[int | str, int]:
    """Image id -> the id it is scored under. hotcoco reads integer image ids only;
    Cityscapes ids are file stems, so both files are scored under the records' positions
    (results are per class, not per image)."""
    return {
        r.image_id: (r.image_id if isinstance(r.image_id, int) else k)
        for k, r in enumerate(records)
    }


def predict_item(rec: PanopticRecord) -> dict[str, Any]:
    """A val record as a prediction row: its result PNG is named after its GT PNG."""
    return {
        "image_id": rec.image_id,
        "image_path": str(rec.image_path),
        "name": Path(rec.png_path).stem,
    }


def subset_gt(gt_json: Path, image_ids: Mapping[int | str, int], out: Path) -> Path:
    """A copy of the GT JSON restricted to the keys of `image_ids` (PQ needs a prediction
    per GT image), each id replaced by its value."""
    data = json.loads(Path(gt_json).read_text())
    data["images"] = [
        {**im, "id": image_ids[im["id"]]} for im in data.get("images", []) if im["id"] in image_ids
    ]
    data["annotations"] = [
        {**a, "image_id": image_ids[a["image_id"]]}
        for a in data["annotations"]
        if a["image_id"] in image_ids
    ]
    out.write_text(json.dumps(data))
    return out
