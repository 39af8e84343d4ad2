"""Paper Table 3: PQ against the input scale b of the analog bits ({-b, +b}).

    python sweeps/input_scale.py --time-budget 4              # tiny preset, generated data
    python sweeps/input_scale.py --preset r50_ablation --data-root /data/coco \\
        --max-concurrent 2                                    # the paper's ablation setting

Paper (R50, 512 px, 100 epochs): b = 0.03 / 0.1 / 0.3 / 1.0 -> PQ 40.8 / 43.9 / 38.7 / 21.3.
"""

from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind

SWEEP = Sweep(
    name="input_scale",
    kind=SweepKind.TRAIN,
    axes=(Axis("diffusion.b_scale", (0.03, 0.1, 0.3, 1.0)),),
    paper="Table 3",
    plot_x="diffusion.b_scale",
)

if __name__ == "__main__":
    from pix2seqd.platform.sweep.cli import main

    main(SWEEP)
