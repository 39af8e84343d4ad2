"""Paper Table 5: PQ against the loss weight p (pixel weight (1/(c+1))^p, c = the pixel's
segment size; p = 0 is uniform weighting).

    python sweeps/loss_weight.py --time-budget 4              # tiny preset, generated data
    python sweeps/loss_weight.py --preset r50_ablation --data-root /data/coco

Paper (R50, 512 px, 100 epochs): p = 0 / 0.2 / 0.4 / 0.6 -> PQ 40.4 / 43.9 / 43.7 / 41.3.
"""

from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind

SWEEP = Sweep(
    name="loss_weight",
    kind=SweepKind.TRAIN,
    axes=(Axis("loss.p", (0.0, 0.2, 0.4, 0.6)),),
    paper="Table 5",
    plot_x="loss.p",
)

if __name__ == "__main__":
    from pix2seqd.platform.sweep.cli import main

    main(SWEEP)
