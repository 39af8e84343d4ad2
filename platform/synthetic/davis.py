"""DAVIS-2017 (unsupervised) layout writer:

    JPEGImages/480p/<seq>/00000.jpg ...
    Annotations_unsupervised/480p/<seq>/00000.png ...   (palette PNG, 0 = background)
    ImageSets/2017/{train,val}.txt

Each sequence: a static textured background and 1-4 shaped objects moving on straight
lines (with slight growth or shrinkage) in a fixed depth order, so they occlude each
other. Object ids are 1..N in order of first appearance (ties by depth order), so the
ids present in frame 0 are 1..k, which is what the DAVIS evaluator assumes.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pix2seqd.platform.synthetic.colours import colour_pair, contrasting_colour
from pix2seqd.platform.synthetic.files import rng_for, save_jpeg, save_png
from pix2seqd.platform.synthetic.layout import stuff_regions
from pix2seqd.platform.synthetic.scene import NOISE_SIGMA
from pix2seqd.platform.synthetic.shapes import SHAPES, shape_mask
from pix2seqd.platform.synthetic.textures import TEXTURES, texture

OBJECT_SIZE = (0.20, 0.40)  # diameter at the first frame, fraction of the shorter side
FRAMES = (10, 16)
MAX_OBJECTS = 4


@dataclass(frozen=True)
class Track:
    """One object's path: centre (y, x) and diameter at the first and last frame, in px."""

    kind: str
    colour: np.ndarray
    start: tuple
    end: tuple
    size: tuple
    aspect: tuple
    flip: bool

    def mask(self, t, h, w):
        """Mask at time t in [0, 1] (linear motion). Returns bool (h, w)."""
        cy, cx = (a + (b - a) * t for a, b in zip(self.start, self.end))
        radius = (self.size[0] + (self.size[1] - self.size[0]) * t) / 2
        return shape_mask(
            self.kind, h, w, cy, cx, radius * self.aspect[0], radius * self.aspect[1], self.flip
        )


def davis_palette():
    """The PASCAL VOC colour map that DAVIS annotations carry. Returns: 768 ints."""
    palette = []
    for i in range(256):
        r = g = b = 0
        for j in range(3):  # 8 bits of i, three at a time, spread MSB-first
            r |= ((i >> (3 * j)) & 1) << (7 - j)
            g |= ((i >> (3 * j + 1)) & 1) << (7 - j)
            b |= ((i >> (3 * j + 2)) & 1) << (7 - j)
        palette += [r, g, b]
    return palette


def make_davis(out, seed, n_train, n_val, min_size=64, max_size=96):
    """Write synthetic DAVIS-2017 sequences (n_train + n_val of them) under `out`;
    byte-identical for equal args. Frame sides are drawn per sequence in
    [min_size, max_size]. Returns: Path(out)."""
    out = Path(out)
    for split, count in (("train", n_train), ("val", n_val)):
        names = [
            write_davis_sequence(out, split, index, seed, min_size, max_size)
            for index in range(count)
        ]
        sets = out / "ImageSets" / "2017"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return out


def write_davis_sequence(out, split, index, seed, min_size, max_size):
    """Draw and write one sequence. Returns: its name."""
    rng = rng_for(seed, "davis", split, index)
    name = f"synth-{split}-{index:04d}"
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    times = np.linspace(0.0, 1.0, int(rng.integers(FRAMES[0], FRAMES[1] + 1)))
    background, colours = davis_background(rng, h, w)
    tracks = [random_track(rng, h, w, colours) for _ in range(rng.integers(1, MAX_OBJECTS + 1))]
    frames, labels = zip(*(render_frame(background, tracks, t) for t in times))
    labels = renumber_by_appearance(np.stack(labels), len(tracks))
    palette = davis_palette()
    for f, (frame, label) in enumerate(zip(frames, labels)):
        noisy = frame + rng.normal(0.0, NOISE_SIGMA, size=frame.shape)
        save_jpeg(
            out / "JPEGImages" / "480p" / name / f"{f:05d}.jpg",
            np.clip(np.rint(noisy), 0, 255).astype(np.uint8),
        )
        save_png(
            out / "Annotations_unsupervised" / "480p" / name / f"{f:05d}.png",
            label.astype(np.uint8),
            palette,
        )
    return name


def davis_background(rng, h, w):
    """Static background of 1-3 textured regions.

    Returns: float32 (h, w, 3), list of its colours (float (3,)).
    """
    n = int(rng.integers(1, 4))
    regions = stuff_regions(rng, h, w, n)
    image = np.zeros((h, w, 3), np.float32)
    colours = []
    for r in range(n):
        c1, c2 = colour_pair(rng)
        t = texture(TEXTURES[rng.integers(len(TEXTURES))], h, w, max(h, w) / 64.0, rng)[..., None]
        image = np.where((regions == r)[..., None], (1 - t) * c1 + t * c2, image)
        colours += [c1, c2]
    return image, colours


def random_track(rng, h, w, colours):
    """An object crossing 10-50 % of the shorter side, growing or shrinking by <= 25 %."""
    side = min(h, w)
    size0 = rng.uniform(*OBJECT_SIZE) * side
    size1 = size0 * rng.uniform(0.8, 1.25)
    start = np.array([rng.uniform(size0 / 2, h - size0 / 2), rng.uniform(size0 / 2, w - size0 / 2)])
    angle = rng.uniform(0, 2 * np.pi)
    end = start + rng.uniform(0.1, 0.5) * side * np.array([np.sin(angle), np.cos(angle)])
    end = np.clip(end, size1 / 2, np.array([h, w]) - size1 / 2)
    colour = contrasting_colour(rng, colours)
    colours.append(colour)
    return Track(
        kind=SHAPES[rng.integers(len(SHAPES))],
        colour=colour,
        start=tuple(start),
        end=tuple(end),
        size=(size0, size1),
        aspect=tuple(rng.uniform(0.88, 1.12, size=2)),
        flip=bool(rng.random() < 0.5),
    )


def render_frame(background, tracks, t):
    """Paint the tracks back to front at time t.

    Returns: float32 (h, w, 3) image, int32 (h, w) label with track k as k + 1.
    """
    h, w = background.shape[:2]
    image = background.copy()
    label = np.zeros((h, w), np.int32)
    for k, track in enumerate(tracks):
        mask = track.mask(t, h, w)
        image[mask] = track.colour
        label[mask] = k + 1
    return image, label


def renumber_by_appearance(labels, n_tracks):
    """Relabel tracks 1..N by first visible frame (ties: depth order); never-visible
    tracks vanish. Args: int (T, h, w). Returns: int (T, h, w)."""
    visible = np.stack([(labels == k + 1).any(axis=(1, 2)) for k in range(n_tracks)])
    first = [int(np.argmax(v)) for v in visible]
    order = sorted((f, k) for k, f in enumerate(first) if visible[k].any())
    lut = np.zeros(n_tracks + 1, np.int32)
    for new_id, (_, k) in enumerate(order, start=1):
        lut[k + 1] = new_id
    return lut[labels]
