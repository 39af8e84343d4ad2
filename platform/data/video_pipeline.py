"""DAVIS training clips as Ray Data map_batches functions (docs/model.md, "Video").

A training example is a clip of `clip_len` = cond_frames + 1 consecutive frames: the image
and mask of the last frame are the target, the ground-truth masks of the frames before it
condition the decoder, oldest first (frames t-2, t-1: the order of `Pix2SeqD.cond_bits`
and `sample_video`). Frame dropout is applied by the model (`models.frame_dropout.drop_frames`).

Each rank reads its own dataset of local indices k; `ClipDecoder.positions` maps them to
global stream positions so that optimizer step s is made of the positions
[s·B, (s+1)·B) of one stream, rank r holding the r-th block of B/world. Positions become
(epoch, clip) as in `pipeline.stream_positions`, and each clip's randomness comes from
(seed, epoch, video name, first frame): the data are a function of the config and the
number of workers only changes who decodes what.

With `data.still_fraction` > 0, the positions drawn as still clips (`still_clips.is_still`)
take a still image instead, walking their own epochs over the still images. With
`data.history_drop` / `history_add` > 0 the earlier frames' masks get the errors of a
model's own predictions (`history_noise`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pix2seqd.platform.config import Config, IdOrder
from pix2seqd.platform.data.davis import (
    VOID,
    VideoRecord,
    davis_label_map,
    id_table,
    read_davis_mask,
)
from pix2seqd.platform.data.frame_cache import ByteLRU, cached_file, process_cache
from pix2seqd.platform.data.history_noise import history_noise
from pix2seqd.platform.data.pipeline import image_seed, rank_positions, read_rgb, stream_positions
from pix2seqd.platform.data.skip_count import skip_recorder
from pix2seqd.platform.data.still_clips import StillSource, is_still, still_clip
from pix2seqd.platform.data.transforms import clip_transform, raster_order_ids, symmetry_augment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipExample:
    """One transformed clip, canvas (H, W), mask size (Hm, Wm) = (H, W) / mask_stride.

    image: (H, W, 3) uint8 of the last frame, zeros outside the valid region; hw: (2,) int32
    valid height, width; mask: (Hm, Wm, 2) uint8 [class, id] of the last frame;
    cond_mask: (clip_len-1, Hm, Wm, 2) uint8 of the earlier frames, oldest first.
    """

    image: np.ndarray
    hw: np.ndarray
    mask: np.ndarray
    cond_mask: np.ndarray


def clip_index(videos: Sequence[VideoRecord], clip_len: int = 3) -> list[tuple[int, int]]:
    """(video index, first frame) of every window of `clip_len` consecutive frames, sliding
    with stride 1 as the official TFRecord writer does. A video with fewer than `clip_len`
    frames gives no clip (it has no frame with `clip_len`-1 real predecessors)."""
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    return [
        (v, f) for v, video in enumerate(videos) for f in range(len(video.frames) - clip_len + 1)
    ]


def read_clip(
    video: VideoRecord, first: int, clip_len: int, max_instances: int, cache: ByteLRU | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Frames first..first+clip_len-1 -> image (h, w, 3) uint8 of the last frame and ids
    (h, w, clip_len) uint8 of every frame: DAVIS object ids through the video's
    `kept_ids` (`davis.id_table`: objects beyond K-1 void), then by `davis_label_map`'s
    rules (void -> 0; an id >= max_instances is an error).

    Only the last frame's JPEG is decoded: the earlier frames condition the model through
    their masks alone (paper §3.4). Unreadable files, sizes that differ from the last frame
    and ids >= max_instances are ValueErrors naming the file. Files (not prepared-shard
    rows) are decoded through `cache` when one is given (`frame_cache`).
    """
    last = first + clip_len - 1
    image = cached_file(cache, video.frames[last], read_frame)
    table = id_table(video.kept_ids)
    frames = []
    for path in video.masks[first : last + 1]:
        raw = cached_file(
            cache, path, lambda p: _read(p, read_davis_mask, "cannot read DAVIS annotation")
        )
        if raw.shape != image.shape[:2]:
            raise ValueError(
                f"{path}: annotation size {raw.shape} differs from frame "
                f"{video.frames[last]} size {image.shape[:2]}"
            )
        # the kept ids and davis_label_map's rules (void -> 0, id check) applied to the
        # values that can occur (0..max, void) and then looked up per pixel: a 256-entry
        # table, not a pass over the int64 (H, W, 2) map
        top = int(raw.max(where=raw != VOID, initial=0))
        values = np.append(np.arange(top + 1), VOID).astype(np.uint8)
        lut = np.zeros(256, np.uint8)
        lut[values] = davis_label_map(table[values][None], max_instances, str(path))[0, :, 1]
        frames.append(np.take(lut, raw))
    return image, np.stack(frames, axis=-1)


def shuffle_ids(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """object_order 'shuffle': a random permutation of the non-zero ids present, one table
    for the whole array (every frame of a clip), 0 stays 0. ids: non-negative int (...) ->
    same shape and dtype.

    The official code permutes 1..max_id; on the compact ids of DAVIS the two agree, and
    when an object is absent from a clip this keeps the clip's set of ids unchanged."""
    present = np.flatnonzero(np.bincount(ids.ravel()))
    present = present[present > 0]
    table = np.arange(int(ids.max(initial=0)) + 1).astype(ids.dtype)
    table[present] = rng.permutation(present)
    return table[ids]


class ClipDecoder:
    """map_batches function for one rank: rows {'id': local index} -> {'image', 'hw',
    'mask', 'cond_mask'} (see ClipExample; stacked over the batch).

    videos: the split's VideoRecords; clips: `clip_index(videos, cond_frames + 1)`;
    start: the global stream position the run resumes from (step · batch_size);
    stills: the still images (`still_clips.load_stills`), needed when data.still_fraction > 0;
    on_skip: with `data.skip_bad`, called with the keys of the clips a batch left out
    because they failed to decode (`<epoch>/<video>/<first frame>`, still clips
    `<epoch>/still/<image_id>`; `skip_count.SkipRecorder`).
    """

    def __init__(
        self,
        cfg: Config,
        videos: Sequence[VideoRecord],
        clips: Sequence[tuple[int, int]],
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        stills: StillSource | None = None,
        on_skip: Callable[[list[str]], None] | None = None,
    ):
        if cfg.model.decoder.cond_frames < 1:
            raise ValueError("video clips need a video model (model.decoder.cond_frames >= 1)")
        if cfg.train.batch_size % world:
            raise ValueError(
                f"train.batch_size={cfg.train.batch_size} is not divisible by {world} workers"
            )
        if not clips:
            raise ValueError("no training clips: every video is shorter than the clip length")
        if cfg.data.still_fraction > 0 and not (stills and stills.rows):
            raise ValueError(
                f"data.still_fraction={cfg.data.still_fraction} needs still images (data.stills)"
            )
        self.cfg, self.videos, self.clips = cfg, list(videos), list(clips)
        self.start, self.rank, self.world = start, rank, world
        self.clip_len = cfg.model.decoder.cond_frames + 1
        self.stills, self.on_skip = stills, on_skip

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seed, positions = self.cfg.train.seed, self.positions(batch["id"])
        epochs, index = stream_positions(positions, len(self.clips), seed)
        still = is_still(positions, seed, self.cfg.data.still_fraction)
        if still.any():  # still positions walk their own epochs over the still images
            s_epochs, s_index = stream_positions(positions, len(self.stills.rows), seed)
        out, skipped = [], []
        for k, (e, i) in enumerate(zip(epochs, index)):
            try:
                out.append(
                    self.still_example(self.stills.rows[s_index[k]], int(s_epochs[k]))
                    if still[k]
                    else self.example(self.clips[i], int(e))
                )
            except (ValueError, OSError) as err:
                if not self.cfg.data.skip_bad:
                    raise
                log.warning("skipping bad clip: %s", err)
                skipped.append(
                    f"{s_epochs[k]}/still/{self.stills.rows[s_index[k]]['image_id']}"
                    if still[k]
                    else f"{e}/{self.videos[self.clips[i][0]].name}/{self.clips[i][1]}"
                )
        if skipped and self.on_skip is not None:
            self.on_skip(skipped)
        return self._stack(out)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Local indices of this rank -> global stream positions (int64)."""
        return rank_positions(ids, self.rank, self.world, self.cfg.train.batch_size, self.start)

    def example(self, clip: tuple[int, int], epoch: int) -> ClipExample:
        """Decode and augment clip (video index, first frame) as seen in `epoch`."""
        cfg, d = self.cfg, self.cfg.data
        video, first = self.videos[clip[0]], clip[1]
        image, ids = read_clip(
            video, first, self.clip_len, cfg.model.max_instances, process_cache(d.cache_mb)
        )
        rng = np.random.default_rng([cfg.train.seed, epoch, image_seed(video.name), first])
        image, ids = symmetry_augment(image, ids, d.vflip, d.rgb_symmetry, rng)
        image, hw, ids = clip_transform(
            image, ids, d.image_hw, self._mask_hw(), d.scale_jitter, d.color_jitter, d.hflip, rng
        )
        # after the (id-agnostic) geometry: the same relabelling, on the small arrays
        return self._finish(image, hw, np.moveaxis(ids, -1, 0), rng)

    def still_example(self, row: dict[str, Any], epoch: int) -> ClipExample:
        """A still image (`data.stills`) as a clip seen in `epoch` (see still_clips)."""
        image, hw, ids = still_clip(
            row,
            epoch,
            self.stills,
            self.cfg,
            self._mask_hw(),
            self.clip_len,
            process_cache(self.cfg.data.cache_mb),
        )
        rng = np.random.default_rng([self.cfg.train.seed, epoch, image_seed(row["image_id"])])
        return self._finish(image, hw, ids, rng)

    def _finish(
        self, image: np.ndarray, hw: np.ndarray, ids: np.ndarray, rng: np.random.Generator
    ) -> ClipExample:
        """ids (T, Hm, Wm), oldest first -> the example, with `data.history_drop` /
        `history_add` noise on the earlier frames, ids in `data.id_order`."""
        d = self.cfg.data
        ids = history_noise(ids, d.history_drop, d.history_add, self.cfg.model.max_instances, rng)
        ids = (
            raster_order_ids(ids)
            if self.cfg.data.id_order is IdOrder.RASTER
            else shuffle_ids(ids, rng)
        )
        mask = np.stack([np.zeros_like(ids), ids], axis=-1)  # class channel 0: DAVIS has one class
        return ClipExample(image, hw, mask[-1], mask[:-1])

    def _mask_hw(self) -> tuple[int, int]:
        (h, w), s = self.cfg.data.image_hw, self.cfg.model.mask_stride
        return h // s, w // s

    def _stack(self, out: list[ClipExample]) -> dict[str, np.ndarray]:
        if out:
            return {
                k: np.stack([getattr(ex, k) for ex in out])
                for k in ("image", "hw", "mask", "cond_mask")
            }
        (h, w), (hm, wm) = self.cfg.data.image_hw, self._mask_hw()
        return {
            "image": np.zeros((0, h, w, 3), np.uint8),
            "hw": np.zeros((0, 2), np.int32),
            "mask": np.zeros((0, hm, wm, 2), np.uint8),
            "cond_mask": np.zeros((0, self.clip_len - 1, hm, wm, 2), np.uint8),
        }


def build_video_train_dataset(
    videos: Sequence[VideoRecord],
    cfg: Config,
    rank: int,
    world: int,
    start: int = 0,
    stills: StillSource | None = None,
):
    """The Ray Dataset of rank `rank`'s training clips from global position `start` to the
    end of the run: (train.steps · batch_size − start) / world examples, in a fixed order;
    `stills`: the still images of `data.stills` (see still_clips)."""
    # lazy: Ray Data loads in seconds; the rest of this module is used without Ray (unit tests)
    import ray.data

    clips = clip_index(videos, cfg.model.decoder.cond_frames + 1)
    decoder = ClipDecoder(cfg, videos, clips, start, rank, world, stills, skip_recorder(cfg))
    count = (cfg.train.steps * cfg.train.batch_size - start) // world
    ds = ray.data.range(count, override_num_blocks=max(1, min(200, count // 256)))
    ds.context.execution_options.preserve_order = True
    # 16 clips per task: a 512 x 1024 example is ~2.4 MB, so output blocks stay ~40 MB
    return ds.map_batches(decoder, batch_size=16, batch_format="numpy", num_cpus=0.5)


def read_frame(path) -> np.ndarray:
    """A frame (file path or prepared-shard RowRef) -> (h, w, 3) uint8; ValueError naming the
    file when it does not decode."""
    return _read(path, read_rgb, "cannot decode image")


def frame_eval_input(image: np.ndarray, canvas: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A frame for streaming inference: (h, w, 3) uint8 -> (canvas (H, W, 3) uint8, valid hw
    (2,) int32), the training geometry at scale 1 without crop, flip or colour jitter (the
    frame fits the canvas, aspect kept, padded bottom/right)."""
    dummy = np.zeros(image.shape[:2] + (1,), np.uint8)
    out, hw, _ = clip_transform(
        image, dummy, canvas, (1, 1), (1.0, 1.0), 0.0, False, np.random.default_rng(0)
    )
    return out, hw


def _read(path, reader, what: str) -> Any:
    """reader(path), with decoding errors (truncated, not an image) as ValueError naming the
    file; a missing file stays FileNotFoundError, as in pipeline.decode_example."""
    try:
        # prepared shards: a RowRef stands for the file and opens as bytes
        return reader(path.open_bytes() if hasattr(path, "open_bytes") else path)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{path}: {what} ({err})") from None
