"""Independent, straightforward re-implementation of the official DAVIS-2017 unsupervised
evaluator (davisvideochallenge/davis2017-evaluation, newest: void masks passed in the
unsupervised task), following docs/davis.md and the official code structure:
naive per-pair loops, cv2.dilate with skimage.morphology.disk, linear_sum_assignment on
the (N', K) score matrix, db_statistics. Needs opencv and scikit-image (not project
dependencies); crosscheck.py runs it in its own venv.

usage: reference.py DAVIS_ROOT RESULTS_DIR OUT_PREFIX   -> OUT_PREFIX.json, OUT_PREFIX.npz
       reference.py --time NPZ                           (times evaluate_unsupervised)
"""

import json
import os
import sys
import time
import warnings
from collections import defaultdict
from glob import glob

import cv2
import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment
from skimage.morphology import disk

_VOID_LABEL = 255


def db_eval_iou(annotation, segmentation, void_pixels=None):
    assert annotation.shape == segmentation.shape
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(segmentation)
    inters = np.sum((segmentation & annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    union = np.sum((segmentation | annotation) & np.logical_not(void_pixels), axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inters / union
    if j.ndim == 0:
        j = 1 if np.isclose(union, 0) else j
    else:
        j[np.isclose(union, 0)] = 1
    return j


def db_eval_boundary(annotation, segmentation, void_pixels=None, bound_th=0.008):
    assert annotation.shape == segmentation.shape
    if annotation.ndim == 3:
        n_frames = annotation.shape[0]
        f_res = np.zeros(n_frames)
        for frame_id in range(n_frames):
            void_pixels_frame = None if void_pixels is None else void_pixels[frame_id, :, :]
            f_res[frame_id] = f_measure(
                segmentation[frame_id], annotation[frame_id], void_pixels_frame, bound_th=bound_th
            )
    else:
        f_res = f_measure(segmentation, annotation, void_pixels, bound_th=bound_th)
    return f_res


def f_measure(foreground_mask, gt_mask, void_pixels=None, bound_th=0.008):
    if void_pixels is not None:
        void_pixels = void_pixels.astype(bool)
    else:
        void_pixels = np.zeros_like(foreground_mask).astype(bool)
    bound_pix = (
        bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    )
    fg_boundary = _seg2bmap(foreground_mask * np.logical_not(void_pixels))
    gt_boundary = _seg2bmap(gt_mask * np.logical_not(void_pixels))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), disk(bound_pix).astype(np.uint8))
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), disk(bound_pix).astype(np.uint8))
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg = np.sum(fg_boundary)
    n_gt = np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    if precision + recall == 0:
        F = 0
    else:
        F = 2 * precision * recall / (precision + recall)
    return F


def _seg2bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def db_statistics(per_frame_values):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        M = np.nanmean(per_frame_values)
        O = np.nanmean(per_frame_values > 0.5)
    N_bins = 4
    ids = np.round(np.linspace(1, len(per_frame_values), N_bins + 1) + 1e-10) - 1
    ids = ids.astype(np.uint8)
    D_bins = [per_frame_values[ids[i] : ids[i + 1] + 1] for i in range(0, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        D = np.nanmean(D_bins[0]) - np.nanmean(D_bins[3])
    return M, O, D


class DAVIS:
    def __init__(self, root, subset="val", resolution="480p"):
        self.img_path = os.path.join(root, "JPEGImages", resolution)
        self.mask_path = os.path.join(root, "Annotations_unsupervised", resolution)
        with open(os.path.join(root, "ImageSets", "2017", f"{subset}.txt")) as f:
            names = [x.strip() for x in f.readlines()]
        self.sequences = defaultdict(dict)
        for seq in names:
            images = np.sort(glob(os.path.join(self.img_path, seq, "*.jpg"))).tolist()
            if len(images) == 0:
                raise FileNotFoundError(f"Images for sequence {seq} not found.")
            self.sequences[seq]["images"] = images
            masks = np.sort(glob(os.path.join(self.mask_path, seq, "*.png"))).tolist()
            masks.extend([-1] * (len(images) - len(masks)))
            self.sequences[seq]["masks"] = masks

    def _get_all_elements(self, sequence, obj_type):
        obj = np.array(Image.open(self.sequences[sequence][obj_type][0]))
        all_objs = np.zeros((len(self.sequences[sequence][obj_type]), *obj.shape))
        obj_id = []
        for i, obj in enumerate(self.sequences[sequence][obj_type]):
            all_objs[i, ...] = np.array(Image.open(obj))
            obj_id.append("".join(obj.split("/")[-1].split(".")[:-1]))
        return all_objs, obj_id

    def get_all_masks(self, sequence, separate_objects_masks=False):
        masks, masks_id = self._get_all_elements(sequence, "masks")
        masks_void = np.zeros_like(masks)
        for i in range(masks.shape[0]):
            masks_void[i, ...] = masks[i, ...] == 255
            masks[i, masks[i, ...] == 255] = 0
        if separate_objects_masks:
            num_objects = int(np.max(masks[0, ...]))
            tmp = np.ones((num_objects, *masks.shape))
            tmp = tmp * np.arange(1, num_objects + 1)[:, None, None, None]
            masks = tmp == masks[None, ...]
            masks = masks > 0
        return masks, masks_void, masks_id

    def get_sequences(self):
        for seq in self.sequences:
            yield seq


class Results:
    def __init__(self, root_dir):
        self.root_dir = root_dir

    def _read_mask(self, sequence, frame_id):
        try:
            mask_path = os.path.join(self.root_dir, sequence, f"{frame_id}.png")
            return np.array(Image.open(mask_path))
        except OSError:
            sys.stdout.write(sequence + " frame %s not found!\n" % frame_id)
            sys.exit()

    def read_masks(self, sequence, masks_id):
        mask_0 = self._read_mask(sequence, masks_id[0])
        masks = np.zeros((len(masks_id), *mask_0.shape))
        for ii, m in enumerate(masks_id):
            masks[ii, ...] = self._read_mask(sequence, m)
        num_objects = int(np.max(masks))
        tmp = np.ones((num_objects, *masks.shape))
        tmp = tmp * np.arange(1, num_objects + 1)[:, None, None, None]
        masks = (tmp == masks[None, ...]) > 0
        return masks


def evaluate_unsupervised(
    all_gt_masks, all_res_masks, all_void_masks, metric=("J", "F"), max_n_proposals=20
):
    if all_res_masks.shape[0] > max_n_proposals:
        sys.stdout.write(
            f"\nIn your PNG files there is an index higher than the maximum number ({max_n_proposals}) of proposals allowed!"
        )
        sys.exit()
    elif all_res_masks.shape[0] < all_gt_masks.shape[0]:
        zero_padding = np.zeros(
            (all_gt_masks.shape[0] - all_res_masks.shape[0], *all_res_masks.shape[1:])
        )
        all_res_masks = np.concatenate([all_res_masks, zero_padding], axis=0)
    j_metrics_res = np.zeros((all_res_masks.shape[0], all_gt_masks.shape[0], all_gt_masks.shape[1]))
    f_metrics_res = np.zeros((all_res_masks.shape[0], all_gt_masks.shape[0], all_gt_masks.shape[1]))
    for ii in range(all_gt_masks.shape[0]):
        for jj in range(all_res_masks.shape[0]):
            j_metrics_res[jj, ii, :] = db_eval_iou(
                all_gt_masks[ii, ...], all_res_masks[jj, ...], all_void_masks
            )
            f_metrics_res[jj, ii, :] = db_eval_boundary(
                all_gt_masks[ii, ...], all_res_masks[jj, ...], all_void_masks
            )
    all_metrics = (np.mean(j_metrics_res, axis=2) + np.mean(f_metrics_res, axis=2)) / 2
    row_ind, col_ind = linear_sum_assignment(-all_metrics)
    return j_metrics_res[row_ind, col_ind, :], f_metrics_res[row_ind, col_ind, :]


def evaluate(davis_root, res_path, subset="val"):
    dataset = DAVIS(davis_root, subset)
    metrics_res = {m: {"M": [], "R": [], "D": [], "M_per_object": {}} for m in ("J", "F")}
    per_frame = {}
    results = Results(res_path)
    for seq in dataset.get_sequences():
        all_gt_masks, all_void_masks, all_masks_id = dataset.get_all_masks(seq, True)
        all_res_masks = results.read_masks(seq, all_masks_id)
        j_res, f_res = evaluate_unsupervised(all_gt_masks, all_res_masks, all_void_masks)
        per_frame[f"{seq}/J"], per_frame[f"{seq}/F"] = j_res, f_res
        for ii in range(all_gt_masks.shape[0]):
            seq_name = f"{seq}_{ii + 1}"
            for m, res in (("J", j_res), ("F", f_res)):
                M, R, D = db_statistics(res[ii])
                metrics_res[m]["M"].append(M)
                metrics_res[m]["R"].append(R)
                metrics_res[m]["D"].append(D)
                metrics_res[m]["M_per_object"][seq_name] = M
    J, F = metrics_res["J"], metrics_res["F"]
    final_mean = (np.mean(J["M"]) + np.mean(F["M"])) / 2.0
    g = [
        final_mean,
        np.mean(J["M"]),
        np.mean(J["R"]),
        np.mean(J["D"]),
        np.mean(F["M"]),
        np.mean(F["R"]),
        np.mean(F["D"]),
    ]
    keys = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    out = {k: float(v) for k, v in zip(keys, g)}
    out["per_object"] = {
        name: {"J-Mean": float(J["M_per_object"][name]), "F-Mean": float(F["M_per_object"][name])}
        for name in J["M_per_object"]
    }
    return out, per_frame


def time_sequence(npz):
    data = np.load(npz)
    gt, pred = data["gt"], data["pred"]
    t0 = time.perf_counter()
    masks = gt.astype(np.float64)
    void = (masks == 255).astype(np.float64)
    masks[masks == 255] = 0
    k = int(masks[0].max())
    gt_masks = (np.arange(1, k + 1)[:, None, None, None] == masks[None]) > 0
    n = int(pred.max())
    res_masks = (np.arange(1, n + 1)[:, None, None, None] == pred[None].astype(np.float64)) > 0
    j, f = evaluate_unsupervised(gt_masks, res_masks, void)
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "J_mean": float(j.mean()), "F_mean": float(f.mean())}))
    np.savez(npz.replace(".npz", "_ref_out.npz"), J=j, F=f)


if __name__ == "__main__":
    if sys.argv[1] == "--time":
        time_sequence(sys.argv[2])
    else:
        res, frames = evaluate(sys.argv[1], sys.argv[2])
        with open(sys.argv[3] + ".json", "w") as fh:
            json.dump(res, fh)
        np.savez(sys.argv[3] + ".npz", **frames)
