"""Streaming video inference with Ray Data (docs/model.md, "Video"): DAVIS sequences -> palette PNGs.

Each actor loads the model once and segments a batch of sequences together, frame index by
frame index (`models.video.stream_videos`): frame t is conditioned on the model's own
predictions for t−2 and t−1, so instance ids are carried across frames by the model itself,
with no matching step. Every frame's ids are resized to the original frame size, ids below
`min_pixels` pixels become background, and the id map is written as an 8-bit palette PNG
`<results_dir>/<sequence>/<frame>.png`, the format the DAVIS evaluator reads.

The DAVIS evaluator refuses more than 20 proposals per sequence. A model with K − 1 ≤ 20 ids
(the davis preset: K = 16) never exceeds it; otherwise the 20 ids with the most pixels over
the sequence are kept, and the others are counted (`dropped`) and reported, never silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pix2seqd.models.config import SampleConfig
from pix2seqd.models.postprocess import drop_small_ids, to_original
from pix2seqd.models.video import StableIds, stream_videos
from pix2seqd.platform.config import Config
from pix2seqd.platform.data.davis import VideoRecord
from pix2seqd.platform.data.pipeline import image_seed
from pix2seqd.platform.data.video_pipeline import frame_eval_input, read_frame
from pix2seqd.platform.evaluation.davis_eval import MAX_PROPOSALS
from pix2seqd.platform.evaluation.predict import load_for_inference, map_with_actors
from pix2seqd.platform.evaluation.sampling import sampling_autocast
from pix2seqd.platform.synthetic.davis import davis_palette
from pix2seqd.platform.synthetic.files import save_png


class VideoPredictor:
    """Ray Data callable class: rows {'video': index into `videos`} -> per-sequence summary
    {'name', 'frames', 'proposals', 'dropped'}; the PNGs go to `results_dir`."""

    def __init__(
        self,
        checkpoint: str,
        videos: Sequence[VideoRecord],
        results_dir: str,
        first_steps: int,
        later_steps: int,
        td: float,
        min_pixels: int,
        seed: int = 0,
        threads: int = 0,
        use_gpu: bool = False,
        sampler: SampleConfig | None = None,
    ):
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        # a folder or storage URI: each actor fetches it on its own node
        self.model, self.cfg = load_for_inference(checkpoint, self.device, sampler)
        self.videos, self.results_dir = list(videos), Path(results_dir)
        self.steps = (first_steps, later_steps or first_steps)
        self.td, self.min_pixels, self.seed = td, min_pixels, seed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        videos = [self.videos[int(i)] for i in batch["video"]]
        ids, steps = self.predict(videos)
        rows = [
            {**self.write(v, frames), "later_frames": 0, "later_steps": 0}
            for v, frames in zip(videos, ids)
        ]
        # the batch's later frames and their steps go on its first row: its videos were
        # sampled together, with one step count per frame index
        rows[0].update(steps)
        return {k: np.array([r[k] for r in rows]) for k in SUMMARY_KEYS}

    def predict(self, videos: list[VideoRecord]) -> tuple[list[list[np.ndarray]], dict[str, int]]:
        """Id maps (h, w) uint8 at each frame's original size, per video, per frame; and
        {'later_frames', 'later_steps'}: the frames after the first and the sampler steps
        they took (`sample.adaptive`: `StableIds`, else `later_steps` each)."""
        canvas = self.cfg.data.image_hw
        sizes: dict[tuple[int, int], tuple] = {}
        out: list[list[np.ndarray]] = [[] for _ in videos]

        def read(t: int, active: list[int]) -> torch.Tensor:
            images = []
            for b in active:
                frame = read_frame(videos[b].frames[t])
                image, hw = frame_eval_input(frame, canvas)
                sizes[b, t] = (tuple(int(v) for v in hw), frame.shape[:2])
                images.append(torch.from_numpy(image).permute(2, 0, 1))
            x = torch.stack(images).to(self.device).float().div_(255.0)
            return self._pad(x, [sizes[b, t][0] for b in active])

        gen = torch.Generator(device=self.device).manual_seed(
            self.seed * 1_000_003 + image_seed(videos[0].name)
        )
        lengths = [len(v.frames) for v in videos]
        rule = adaptive_rule(self.cfg)
        # the post-processing inside the block is integer work, which autocast leaves alone
        with sampling_autocast(self.cfg, self.device):
            for t, active, pred in stream_videos(
                self.model, read, lengths, *self.steps, self.td, gen, rule
            ):
                for b, p in zip(active, pred):
                    hw, orig = sizes.pop((b, t))
                    full = to_original(p[1], canvas, hw, orig)
                    out[b].append(
                        drop_small_ids(full, self.cfg.model.max_instances, self.min_pixels)
                        .to(torch.uint8)
                        .cpu()
                        .numpy()
                    )
        later = sum(max(0, n - 1) for n in lengths)
        if rule is None:
            return out, {"later_frames": later, "later_steps": later * self.steps[1]}
        return out, {"later_frames": rule.frames, "later_steps": rule.steps}

    def _pad(self, x: torch.Tensor, valid: list[tuple[int, int]]) -> torch.Tensor:
        """The training padding value outside each frame's valid region (as to_model_inputs)."""
        rows = torch.arange(x.shape[-2], device=x.device)[:, None]
        cols = torch.arange(x.shape[-1], device=x.device)[None, :]
        for i, (h, w) in enumerate(valid):
            x[i][:, (rows >= h) | (cols >= w)] = self.cfg.data.pad_value
        return x

    def write(self, video: VideoRecord, frames: list[np.ndarray]) -> dict[str, Any]:
        dropped = cap_proposals(frames, MAX_PROPOSALS)
        folder = self.results_dir / video.name
        folder.mkdir(parents=True, exist_ok=True)
        for mask_path, ids in zip(video.masks, frames):
            write_palette_png(folder / f"{Path(mask_path.name).stem}.png", ids)
        proposals = int(max(int(f.max(initial=0)) for f in frames)) if frames else 0
        return {
            "name": video.name,
            "frames": len(frames),
            "proposals": proposals,
            "dropped": dropped,
        }


SUMMARY_KEYS = ("name", "frames", "proposals", "dropped", "later_frames", "later_steps")


def adaptive_rule(cfg: Config) -> StableIds | None:
    """`sample.adaptive`'s rule for one batch of videos, or None (fixed steps)."""
    if not cfg.sample.adaptive:
        return None
    m = cfg.model
    return StableIds(m.num_classes, m.max_instances, cfg.sample.adaptive_change)


def cap_proposals(frames: list[np.ndarray], limit: int) -> int:
    """Keep the `limit` ids with the most pixels over all `frames` (ties: lower id), set the
    others to 0 in place; returns how many ids were dropped."""
    counts = sum(np.bincount(f.ravel(), minlength=256) for f in frames)
    present = np.flatnonzero(counts[1:]) + 1
    if len(present) <= limit:
        return 0
    order = present[np.lexsort((present, -counts[present]))]
    keep = np.zeros(256, bool)
    keep[0] = True
    keep[order[:limit]] = True
    for f in frames:
        f[~keep[f]] = 0
    return len(present) - limit


def write_palette_png(path: Path, ids: np.ndarray) -> None:
    """(h, w) uint8 ids -> an indexed PNG with the DAVIS palette (what the evaluator reads)."""
    save_png(path, ids, davis_palette())


def predict_videos(
    videos: Sequence[VideoRecord],
    checkpoint: str,
    results_dir: str,
    first_steps: int,
    later_steps: int,
    td: float,
    min_pixels: int,
    videos_per_batch: int,
    num_actors: int,
    use_gpu: bool,
    seed: int = 0,
    sampler: SampleConfig | None = None,
) -> list[dict[str, Any]]:
    """Run `VideoPredictor` actors over `videos`; returns one summary row per sequence.
    sampler: the job's sampler settings (`predict.load_for_inference`)."""
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    ds = map_with_actors(
        [{"video": i} for i in range(len(videos))],
        VideoPredictor,
        videos_per_batch,
        num_actors,
        use_gpu,
        dict(
            checkpoint=checkpoint,
            videos=list(videos),
            results_dir=results_dir,
            first_steps=first_steps,
            later_steps=later_steps,
            td=td,
            min_pixels=min_pixels,
            seed=seed,
            sampler=sampler,
        ),
    )
    rows = ds.take_all()
    return [{"name": str(r["name"]), **{k: int(r[k]) for k in SUMMARY_KEYS[1:]}} for r in rows]
