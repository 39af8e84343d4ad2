"""The served MLflow model (docs/serving.md): a checkpoint's EMA weights behind
`mlflow.pyfunc`, predicting as `jobs/predict.py` does, in one process and without Ray.

`PanopticModel` is the pyfunc; it hands requests to the segmenter of the checkpoint's kind.

`ImageSegmenter` (`model.decoder.cond_frames` = 0): one row per image, column `image` = the
encoded file (JPEG or PNG; base64 in a REST request). Each row gets `png`, the COCO-panoptic
result PNG at the image's size (segment id = R + 256 G + 256² B, 0 = void), and
`segments_info`, its segments as JSON (id, category_id, area, bbox, iscrowd, score): what
the job writes as `<stem>.png` and as the annotation's `segments_info` in predictions.json.
Rows are sampled in batches of `eval.batch_size` in request order, each batch with the seed
of its first row's position (`batch_seed`), as the job numbers the files of its input folder.

`VideoSegmenter`: one row per frame, columns `video` (the sequence's name, which seeds its
noise as the frames folder's name does in the job) and `frame` (the encoded frame); a
video's frames are its rows in request order. Each row gets `png`, the frame's object ids
as a DAVIS palette PNG (0 = background), `ids`, the ids present (JSON), and
`proposals_dropped`, the ids over the DAVIS evaluator's limit set to 0 in that video.

Sampling uses the checkpoint's `sample.*` settings, on the GPU when torch sees one."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from PIL import Image

from pix2seqd.platform.config import Config
from pix2seqd.platform.data.coco_panoptic import CategoryMap
from pix2seqd.platform.data.davis import VideoRecord
from pix2seqd.platform.data.video_pipeline import read_frame
from pix2seqd.platform.evaluation.davis_eval import MAX_PROPOSALS
from pix2seqd.platform.evaluation.panoptic_io import encode_prediction
from pix2seqd.platform.evaluation.predict import (
    batch_seed,
    checkpoint_info,
    load_for_inference,
    predict_scored_label_maps,
)
from pix2seqd.platform.evaluation.video_predict import VideoPredictor, cap_proposals
from pix2seqd.platform.synthetic.davis import davis_palette

# the model's artifact: a folder holding checkpoint.pt (platform/serving/log_model.py)
CHECKPOINT_ARTIFACT = "checkpoint"


@dataclass(frozen=True)
class EncodedFile:
    """An encoded image of a request, opened wherever a file path is (`open_bytes`, as the
    prepared shards' `RowRef`) and named in decoding errors by its request row."""

    data: bytes
    name: str

    def open_bytes(self) -> io.BytesIO:
        return io.BytesIO(self.data)

    def __str__(self) -> str:
        return self.name


class ImageSegmenter:
    """Images -> COCO-panoptic result PNGs and segments_info (the module's docstring)."""

    def __init__(self, folder: str, cfg: Config, meta: dict[str, Any]):
        self.cmap = CategoryMap.from_coco(meta["categories"], f"{folder} (categories)")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.cfg = load_for_inference(folder, device, cfg.sample)

    @staticmethod
    def signature() -> ModelSignature:
        return ModelSignature(
            inputs=Schema([ColSpec(DataType.binary, "image")]),
            outputs=Schema(
                [ColSpec(DataType.binary, "png"), ColSpec(DataType.string, "segments_info")]
            ),
        )

    @staticmethod
    def input_example() -> pd.DataFrame:
        return pd.DataFrame({"image": [example_png(0)]})

    def predict(self, request: pd.DataFrame) -> pd.DataFrame:
        images = [
            read_frame(EncodedFile(bytes(data), f"request row {k} (image)"))
            for k, data in enumerate(request["image"])
        ]
        s, size = self.cfg.sample, self.cfg.eval.batch_size
        rows = []
        for start in range(0, len(images), size):
            scored = predict_scored_label_maps(
                self.model,
                self.cfg,
                images[start : start + size],
                s.steps,
                s.td,
                s.min_pixels,
                batch_seed(0, start),
            )
            for k, (label, score_map) in enumerate(scored, start):
                png, info = encode_prediction(
                    label, self.cmap, f"request row {k}", layout="2hw", score_map=score_map
                )
                rows.append({"png": png, "segments_info": json.dumps(info)})
        return pd.DataFrame(rows, columns=["png", "segments_info"])


class VideoSegmenter:
    """Frame sequences -> per-frame object id PNGs (the module's docstring)."""

    def __init__(self, folder: str, cfg: Config, meta: dict[str, Any]):
        s = cfg.sample
        # The job's Ray Data actor class, called in this process: its `predict` is the job's
        # streaming inference; the videos and results folder it takes serve only the actor.
        self.predictor = VideoPredictor(
            folder,
            (),
            "",
            s.steps,
            s.later_steps,
            s.td,
            s.min_pixels,
            use_gpu=torch.cuda.is_available(),
            sampler=s,
        )

    @staticmethod
    def signature() -> ModelSignature:
        return ModelSignature(
            inputs=Schema([ColSpec(DataType.string, "video"), ColSpec(DataType.binary, "frame")]),
            outputs=Schema(
                [
                    ColSpec(DataType.string, "video"),
                    ColSpec(DataType.binary, "png"),
                    ColSpec(DataType.string, "ids"),
                    ColSpec(DataType.long, "proposals_dropped"),
                ]
            ),
        )

    @staticmethod
    def input_example() -> pd.DataFrame:
        frames = [example_png(0), example_png(4)]
        return pd.DataFrame({"video": ["example"] * len(frames), "frame": frames})

    def predict(self, request: pd.DataFrame) -> pd.DataFrame:
        names = [str(v) for v in request["video"]]
        frames = list(request["frame"])
        rows_of: dict[str, list[int]] = {}
        for k, name in enumerate(names):
            rows_of.setdefault(name, []).append(k)
        out: list[dict[str, Any]] = [{} for _ in names]
        for name, rows in rows_of.items():
            files = tuple(
                EncodedFile(bytes(frames[k]), f"request row {k} (video {name!r})") for k in rows
            )
            videos, _ = self.predictor.predict([VideoRecord(name, files, files)])
            ids = videos[0]
            dropped = cap_proposals(ids, MAX_PROPOSALS)
            for k, frame_ids in zip(rows, ids):
                out[k] = {
                    "video": name,
                    "png": palette_png(frame_ids),
                    "ids": json.dumps(np.unique(frame_ids[frame_ids > 0]).tolist()),
                    "proposals_dropped": dropped,
                }
        return pd.DataFrame(out, columns=["video", "png", "ids", "proposals_dropped"])


def segmenter_class(cfg: Config) -> type[ImageSegmenter] | type[VideoSegmenter]:
    """The segmenter of a checkpoint's config: video when the decoder conditions on frames."""
    return VideoSegmenter if cfg.model.decoder.cond_frames >= 1 else ImageSegmenter


class PanopticModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: loads the checkpoint artifact, predicts with its kind's segmenter."""

    def load_context(self, context) -> None:
        folder = context.artifacts[CHECKPOINT_ARTIFACT]
        cfg, meta = checkpoint_info(folder)
        self.segmenter = segmenter_class(cfg)(folder, cfg, meta)

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return self.segmenter.predict(model_input)


def palette_png(ids: np.ndarray) -> bytes:
    """(h, w) uint8 object ids -> the DAVIS palette PNG the video job writes, in memory."""
    image = Image.fromarray(ids)
    image.putpalette(davis_palette())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def example_png(shift: int) -> bytes:
    """A small RGB test card (colour gradients and a square, moved right by `shift` pixels)
    as PNG bytes: the models' input example."""
    h, w = 24, 32
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([rows * 255 // h, cols * 255 // w, np.full((h, w), 96)], axis=-1)
    image[6:18, 8 + shift : 20 + shift] = (230, 60, 40)
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
