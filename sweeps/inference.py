"""Paper Fig. 6: PQ of one checkpoint against the sampler's steps, the DDIM time difference
τ_d and the minimum segment size (pixels at the original resolution). The encoder runs once
per image for the whole grid. A video checkpoint gets the video grid (paper §3.4, Fig. 7):
J&F against the steps of each later frame, τ_d and the adaptive stop of `sample.adaptive`
(docs/distillation.md), with the mean steps per later frame and the time per frame.

    python sweeps/inference.py --checkpoint runs:/<training run id>
    python sweeps/inference.py --checkpoint s3://bucket/ckpt --data-root /data/coco \\
        --steps 5,10,20 --td 1,2,3 --min-pixels 80 --set eval.max_images=500
    python sweeps/inference.py --checkpoint runs:/<video run id> --data-root /data/DAVIS \\
        --later-steps 4,8 --adaptive false,true --adaptive-change 0.005

Paper (MS-COCO): about 20 steps suffice (6a), τ_d of 2-3 is best (6b), a well-chosen
minimum size gives a small gain (6c).
"""

from pix2seqd.platform.sweep.spec import VIDEO_SCORES, Axis, Sweep, SweepKind

VIDEO_SWEEP = Sweep(
    name="inference_video",
    kind=SweepKind.INFERENCE,
    axes=(
        Axis("sample.later_steps", (2, 4, 8)),
        Axis("sample.td", (1.0, 2.0)),
        Axis("sample.adaptive", (False, True)),
        Axis("sample.adaptive_change", (0.005,)),
    ),
    paper="§3.4, Fig. 7",
    metric="j_and_f",
    plot_x="sample.later_steps",
    plot_series="sample.adaptive",
    scores=VIDEO_SCORES,
)

SWEEP = Sweep(
    name="inference",
    kind=SweepKind.INFERENCE,
    axes=(
        Axis("sample.steps", (1, 2, 5, 10, 20, 50)),
        Axis("sample.td", (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)),
        Axis("sample.min_pixels", (0, 40, 80)),
    ),
    paper="Fig. 6",
    plot_x="sample.steps",
    plot_series="sample.td",
    video=VIDEO_SWEEP,
)

if __name__ == "__main__":
    from pix2seqd.platform.sweep.cli import main

    main(SWEEP)
