"""The confidence score of each predicted segment, which AP^Th_pan ranks detections by
(docs/pq.md, "Beside PQ: mIoU and AP^Th_pan").

    score(s) = (1/|s|) · Σ_{pixels i of s} p_i · [c_i = c_s]

over the pixels i of segment s at the image's original size, where c_i is the class the
sampler returned at the mask pixel i was resized from, p_i the model's probability of c_i at
the last DDIM step (`Pix2SeqD.sample(..., return_probs=True)`, `Pix2SeqD.class_prob`) and
c_s the segment's class after the majority vote. A pixel outvoted by its id's majority adds 0:
only the probability of the sampled class is kept, so the segment class's probability there
is unknown (and at most 1 − p_i).
"""

from __future__ import annotations

import numpy as np


def agreement_map(sampled_cls: np.ndarray, final_cls: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """p_i · [c_i = final class of pixel i], float32 (H, W).

    sampled_cls: the sampler's class per pixel (H, W); final_cls: the class after the
    majority vote (H, W; 0 = void); prob: p_i (H, W), all at the same size."""
    if not sampled_cls.shape == final_cls.shape == prob.shape:
        raise ValueError(
            f"agreement_map: shapes differ: sampled classes {sampled_cls.shape}, final "
            f"classes {final_cls.shape}, probabilities {prob.shape}"
        )
    return np.where(sampled_cls == final_cls, prob, 0.0).astype(np.float32)


def segment_scores(seg_ids: np.ndarray, score_map: np.ndarray, n: int) -> np.ndarray:
    """Mean of `score_map` over each segment 1..n of `seg_ids` (H, W; 0 = void) -> float64 (n,).

    A segment id without pixels scores 0."""
    if seg_ids.shape != score_map.shape:
        raise ValueError(
            f"segment_scores: segment map {seg_ids.shape} and score map {score_map.shape} differ"
        )
    flat = seg_ids.ravel().astype(np.int64)
    total = np.bincount(flat, weights=score_map.ravel().astype(np.float64), minlength=n + 1)
    count = np.bincount(flat, minlength=n + 1)
    return (total / np.maximum(count, 1))[1 : n + 1]
