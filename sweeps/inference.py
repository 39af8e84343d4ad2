"""Paper Fig. 6: PQ of one checkpoint against the sampler's steps, the DDIM time difference
τ_d and the minimum segment size (pixels at the original resolution). The encoder runs once
per image for the whole grid.

    python sweeps/inference.py --checkpoint runs:/<training run id>
    python sweeps/inference.py --checkpoint s3://bucket/ckpt --data-root /data/coco \\
        --steps 5,10,20 --td 1,2,3 --min-pixels 80 --set eval.max_images=500

Paper (MS-COCO): about 20 steps suffice (6a), τ_d of 2-3 is best (6b), a well-chosen
minimum size gives a small gain (6c).
"""

from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind

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
)

if __name__ == "__main__":
    from pix2seqd.platform.sweep.cli import main

    main(SWEEP)
