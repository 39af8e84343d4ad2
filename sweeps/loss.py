"""Paper Table 4: the loss on x0, l2 regression of the analog bits vs softmax cross-entropy.

    python sweeps/loss.py --time-budget 4                     # tiny preset, generated data
    python sweeps/loss.py --preset r50_ablation --data-root /data/coco

Paper (R50, 512 px, 100 epochs): l2 41.9, cross-entropy 43.9 PQ.
"""

from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind

SWEEP = Sweep(
    name="loss",
    kind=SweepKind.TRAIN,
    axes=(Axis("loss.kind", ("l2", "softmax_ce")),),
    paper="Table 4",
    plot_x="loss.kind",
)

if __name__ == "__main__":
    from pix2seqd.platform.sweep.cli import main

    main(SWEEP)
