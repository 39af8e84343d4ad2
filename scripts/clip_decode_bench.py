"""Clip decoding time of the tiny video preset with and without the decoded-file cache
(`data.cache_mb`), in this process, on the generated DAVIS set and its still images.

Alternates cache off / on `--rounds` times over the same `--clips` stream positions and
prints ms per clip for each and the ratio of the medians. Needs no Ray cluster.

    python scripts/clip_decode_bench.py [--clips 4000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pix2seqd.platform.config import override
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.pipeline import record_item
from pix2seqd.platform.data.sources import load_panoptic_split
from pix2seqd.platform.data.still_clips import StillSource
from pix2seqd.platform.data.video_pipeline import ClipDecoder, clip_index
from pix2seqd.platform.presets import as_video, tiny


def ms_per_clip(cache_mb: float, videos, stills, clips: int) -> float:
    cfg = override(as_video(tiny()), {"data.cache_mb": cache_mb})
    decoder = ClipDecoder(cfg, videos, clip_index(videos, cfg.model.decoder.cond_frames + 1),
                          stills=stills)
    start = time.perf_counter()
    for k in range(0, clips, 16):
        decoder({"id": np.arange(k, k + 16)})
    return (time.perf_counter() - start) / clips * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    videos = load_davis(resolve_data_root("", video=True), "train")
    records, cmap = load_panoptic_split("coco", resolve_data_root(""), "train2017")
    stills = StillSource([record_item(r) for r in records], cmap)
    times = {0: [], 256: []}
    for _ in range(args.rounds):
        for mb in times:
            times[mb].append(ms_per_clip(mb, videos, stills, args.clips))
            print(f"cache_mb {mb}: {times[mb][-1]:.2f} ms/clip")
    off, on = (float(np.median(times[mb])) for mb in (0, 256))
    print(f"median: no cache {off:.2f} ms/clip, cache {on:.2f} ms/clip, ratio {off / on:.2f}x")


if __name__ == "__main__":
    main()
