"""Cross-check pix2seqd's DAVIS J&F (platform/evaluation/davis_eval.py) against
reference.py, a plain reimplementation of the official evaluator with OpenCV and
scikit-image, on random generated sequences; prints the differences and timings.

    python3 -m venv /tmp/davisref
    /tmp/davisref/bin/pip install numpy scipy opencv-python-headless scikit-image pillow
    python scripts/davis_crosscheck/crosscheck.py [SEED]     # with the project's venv

DAVISREF_PYTHON overrides the reference interpreter. No SEED: seed 0 plus the timing case.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pix2seqd.platform.evaluation import davis_eval as de

ROOT = Path(tempfile.gettempdir()) / "davis_xcheck"
REF_PY = os.environ.get("DAVISREF_PYTHON", "/tmp/davisref/bin/python")
REF_SCRIPT = str(Path(__file__).with_name("reference.py"))
PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]


def shape_mask(rng, h, w, cy, cx, sy, sx, kind):
    yy, xx = np.mgrid[:h, :w]
    if kind == 0:
        return (abs(yy - cy) <= sy) & (abs(xx - cx) <= sx)
    if kind == 1:
        return ((yy - cy) / max(sy, 1)) ** 2 + ((xx - cx) / max(sx, 1)) ** 2 <= 1
    noise = rng.random((h // 4 + 2, w // 4 + 2))  # blob: thresholded upsampled noise in an ellipse
    up = np.kron(noise, np.ones((4, 4)))[:h, :w]
    ell = ((yy - cy) / max(sy, 1)) ** 2 + ((xx - cx) / max(sx, 1)) ** 2 <= 1.3
    return ell & (up > 0.35)


def make_sequence(rng, h, w, t_len, k, n_prop):
    gt = np.zeros((t_len, h, w), np.uint8)
    pred = np.zeros((t_len, h, w), np.uint8)
    objs = []
    for _ in range(k + 1):  # the last one only appears later (dropped by the evaluator)
        objs.append(
            dict(
                cy=rng.uniform(-0.1, 1.1) * h,
                cx=rng.uniform(-0.1, 1.1) * w,
                sy=rng.uniform(0.05, 0.4) * h,
                sx=rng.uniform(0.05, 0.4) * w,
                vy=rng.normal(0, 0.03) * h,
                vx=rng.normal(0, 0.03) * w,
                kind=rng.integers(3),
            )
        )
    late_start = rng.integers(1, max(t_len, 2))
    missing_first = rng.integers(1, k + 1) if k > 1 and rng.random() < 0.3 else None
    void_band = rng.random() < 0.5
    perm = (
        rng.permutation(np.arange(1, n_prop + 1))[:k]
        if n_prop >= k
        else np.concatenate([rng.permutation(np.arange(1, n_prop + 1)), np.zeros(k - n_prop, int)])
    )
    switch_t = rng.integers(0, t_len) if rng.random() < 0.4 else None
    for t in range(t_len):
        frame = np.zeros((h, w), np.uint8)
        for i, o in enumerate(objs):
            oid = i + 1
            if oid == k + 1 and t < late_start:
                continue
            if oid == missing_first and t == 0:
                continue
            if rng.random() < 0.1:
                continue  # object absent in this frame
            m = shape_mask(
                rng, h, w, o["cy"] + o["vy"] * t, o["cx"] + o["vx"] * t, o["sy"], o["sx"], o["kind"]
            )
            frame[m] = oid
        if k >= 1 and t == 0 and frame.max() < k:  # first frame must hold object k (K = max id)
            frame[: max(2, h // 10), : max(2, w // 10)] = k
        if k == 0:
            frame[:] = 0
        # void: a band around object boundaries and/or a random rectangle
        void = np.zeros((h, w), bool)
        if void_band:
            b = de.boundary_map(frame > 0)
            void |= de.dilate(b, 1)
        if rng.random() < 0.4:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            void[y0 : y0 + rng.integers(1, h // 3 + 2), x0 : x0 + rng.integers(1, w // 3 + 2)] = (
                True
            )
        gt_frame = frame.copy()
        gt_frame[void] = 255
        gt[t] = gt_frame
        # prediction: shifted / perturbed GT objects mapped to proposal ids, plus extras
        p = np.zeros((h, w), np.uint8)
        mapping = perm.copy()
        if switch_t is not None and t >= switch_t and k >= 2:
            mapping[[0, 1]] = mapping[[1, 0]]
        if rng.random() < 0.1:
            pred[t] = p
            continue
        for i in range(k + 1):
            pid = mapping[i] if i < k else rng.integers(0, n_prop + 1)
            if pid == 0:
                continue
            m = frame == i + 1
            dy, dx = rng.integers(-4, 5, size=2)
            m = np.roll(np.roll(m, dy, 0), dx, 1)
            if rng.random() < 0.3:
                m &= rng.random((h, w)) > 0.05
            p[m] = pid
        for pid in range(1, n_prop + 1):
            if pid not in mapping and rng.random() < 0.5:
                m = shape_mask(
                    rng,
                    h,
                    w,
                    rng.uniform(0, h),
                    rng.uniform(0, w),
                    rng.uniform(1, h / 5),
                    rng.uniform(1, w / 5),
                    rng.integers(3),
                )
                p[m] = pid
        if rng.random() < 0.3:  # prediction spilling into void
            p[void & (rng.random((h, w)) < 0.5)] = rng.integers(1, n_prop + 1)
        pred[t] = p
    if n_prop:
        t = rng.integers(0, t_len)
        pred[t, h - 1, w - 1] = n_prop  # make sure N is exactly n_prop
    return gt, pred


def save_png(path, ids):
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    im.save(path)


def write_dataset(seed=0, n_seq=36):
    rng = np.random.default_rng(seed)
    shutil.rmtree(ROOT, ignore_errors=True)
    sizes = [(24, 40), (120, 160), (37, 53), (60, 90), (45, 45), (100, 30)]
    names, big = [], []
    arrays = {}
    for s in range(n_seq):
        if s in (0, 1):
            (h, w), t_len = (480, 854), 4
        else:
            (h, w), t_len = sizes[s % len(sizes)], int(rng.integers(1, 11))
        k = int(rng.integers(0, 6)) if s > 2 else int(rng.integers(1, 6))
        n_prop = int(rng.integers(1, 26))
        gt, pred = make_sequence(rng, h, w, t_len, k, n_prop)
        name = f"seq{s:02d}"
        arrays[name] = (gt, pred)
        (names if int(pred.max()) <= 20 else big).append(name)
        for sub, data in (("Annotations_unsupervised/480p", gt), ("results", pred)):
            folder = ROOT / sub / name
            folder.mkdir(parents=True)
            for t in range(t_len):
                save_png(folder / f"{t:05d}.png", data[t])
        jpg = ROOT / "JPEGImages/480p" / name
        jpg.mkdir(parents=True)
        for t in range(t_len):
            Image.new("RGB", (8, 8)).save(jpg / f"{t:05d}.jpg")
    (ROOT / "ImageSets/2017").mkdir(parents=True)
    (ROOT / "ImageSets/2017/val.txt").write_text("\n".join(names) + "\n")
    return names, big, arrays


def main(seed=0):
    names, big, arrays = write_dataset(seed)
    print(f"{len(names)} sequences compared, {len(big)} with > 20 proposals checked for the error")
    for name in big:
        try:
            de.evaluate_sequence(*arrays[name], name)
            print("NO ERROR for", name)
        except ValueError as err:
            assert str(int(arrays[name][1].max())) in str(err) and "20" in str(err)
    subprocess.run(
        [REF_PY, REF_SCRIPT, str(ROOT), str(ROOT / "results"), "/tmp/davis_xcheck_ref"], check=True
    )
    ref = json.loads(Path("/tmp/davis_xcheck_ref.json").read_text())
    ref_frames = np.load("/tmp/davis_xcheck_ref.npz")
    t0 = time.perf_counter()
    mine = de.evaluate_davis(ROOT, ROOT / "results")
    t_mine = time.perf_counter() - t0
    mine1 = de.evaluate_davis(ROOT, ROOT / "results", workers=1)
    assert mine1 == mine, "result depends on the thread pool"
    assert list(mine["per_object"]) == list(ref["per_object"]), "object names/order differ"
    n_obj = len(mine["per_object"])
    print(f"objects: {n_obj}; evaluate_davis {t_mine:.2f}s")
    for key in de.GLOBAL_KEYS:
        print(
            f"  {key:9s} mine {mine[key]:.15f} ref {ref[key]:.15f} |diff| {abs(mine[key] - ref[key]):.3g}"
        )
    for m in ("J-Mean", "F-Mean"):
        d = max(abs(mine["per_object"][n][m] - ref["per_object"][n][m]) for n in mine["per_object"])
        print(f"  per-object {m}: max |diff| {d:.3g}")
    dj = df = 0.0
    for name in names:
        j, f = de.evaluate_sequence(*arrays[name], name)
        rj, rf = ref_frames[f"{name}/J"], ref_frames[f"{name}/F"]
        assert j.shape == rj.shape, (name, j.shape, rj.shape)
        if j.size:
            dj, df = max(dj, np.abs(j - rj).max()), max(df, np.abs(f - rf).max())
    print(f"  per-frame matched J max |diff| {dj:.3g}, F max |diff| {df:.3g}")
    exact = all(mine[k] == ref[k] for k in de.GLOBAL_KEYS)
    print("  global numbers bitwise equal:", exact)


def timing():
    rng = np.random.default_rng(1)
    gt, pred = make_sequence(rng, 480, 854, 40, 5, 12)
    np.savez("/tmp/davis_timing.npz", gt=gt, pred=pred)
    print(
        "timing sequence: K =", int(np.where(gt[0] == 255, 0, gt[0]).max()), "N =", int(pred.max())
    )
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        j, f = de.evaluate_sequence(gt, pred, "timing")
        best.append(time.perf_counter() - t0)
    print(f"mine: {min(best):.3f}s (best of 3)")
    subprocess.run([REF_PY, REF_SCRIPT, "--time", "/tmp/davis_timing.npz"], check=True)
    ref = np.load("/tmp/davis_timing_ref_out.npz")
    print("timing case max |diff| J", np.abs(j - ref["J"]).max(), "F", np.abs(f - ref["F"]).max())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    if len(sys.argv) == 1:
        timing()
