"""History noise: video training clips whose conditioning masks carry the errors of a
model's own predictions (`data.history_drop`, `data.history_add`; not in the paper).

At inference the decoder is conditioned on its own masks of frames t−2 and t−1; trained
on ground-truth history alone it learns that every object of the history is right and
that no object is new, so an object missed on the first frame stays missed and a false
one stays (exposure bias; mask-propagation trackers such as MaskTrack train on deformed
previous masks for the same reason). Two errors are simulated, on the masks of the
earlier frames only, before the id order (`data.id_order`) is applied:

- each object of the history is erased from every history frame with probability
  `history_drop`: the target shows it as a new object (under the raster order it takes
  an id after those of the history, as an object found late would);
- with probability `history_add` a false object, an ellipse of 15-40 % of the shorter
  mask side with an id of its own, is painted on the background of every history frame:
  the target does not have it, so the model learns to drop what the image does not show.
"""

from __future__ import annotations

import numpy as np

FALSE_OBJECT_SIZE = (0.15, 0.40)  # diameter, fraction of the shorter mask side


def erase_objects(ids: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """ids (T, Hm, Wm), oldest first, the last frame the target -> a copy where each object
    id present in frames 0..T−2 is set to 0 there with probability `rate`."""
    out = ids.copy()
    if rate <= 0 or len(ids) < 2:
        return out
    history = out[:-1]
    for obj in np.unique(history[history > 0]):
        if rng.random() < rate:
            history[history == obj] = 0
    return out


def add_false_object(
    ids: np.ndarray, rate: float, max_instances: int, rng: np.random.Generator
) -> np.ndarray:
    """ids (T, Hm, Wm) -> a copy where, with probability `rate`, an ellipse with a new id
    (one more than the largest) covers the background (0) of frames 0..T−2. Skipped when
    the clip already has max_instances − 1 objects (no id left) or T < 2."""
    out = ids.copy()
    if rate <= 0 or len(ids) < 2 or rng.random() >= rate:
        return out
    present = np.unique(ids[ids > 0])
    if len(present) >= max_instances - 1:
        return out
    h, w = ids.shape[1:]
    radius = rng.uniform(*FALSE_OBJECT_SIZE, size=2) * min(h, w) / 2
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    y, x = np.ogrid[:h, :w]
    blob = ((y + 0.5 - cy) / radius[0]) ** 2 + ((x + 0.5 - cx) / radius[1]) ** 2 <= 1.0
    history = out[:-1]
    history[(history == 0) & blob[None]] = int(ids.max()) + 1
    return out


def history_noise(
    ids: np.ndarray, drop: float, add: float, max_instances: int, rng: np.random.Generator
) -> np.ndarray:
    """Both errors on a clip's ids (T, Hm, Wm), oldest first; nothing is drawn from `rng`
    when both rates are 0 (so clips without history noise are unchanged)."""
    if drop <= 0 and add <= 0:
        return ids
    return add_false_object(erase_objects(ids, drop, rng), add, max_instances, rng)
