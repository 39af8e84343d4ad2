"""Train the streaming video model of Pix2Seq-D on a DAVIS-2017 layout with Ray Train,
score J&F (DAVIS unsupervised), log to MLflow. Image presets become their video model
(`presets.as_video`); start from an image checkpoint with --init-from.

    python jobs/train_davis.py --preset tiny --init-from runs:/<train_coco run id>
    python jobs/train_davis.py --preset davis --davis-root /data/DAVIS --init-from CKPT --set train.use_gpu=true
"""
from __future__ import annotations

import argparse

from pix2seqd.platform.cli import add_common_flags, add_source_flags, add_training_flags, training_setup
from pix2seqd.platform.presets import as_video
from pix2seqd.platform.tracking import ui_command
from pix2seqd.platform.train.run_davis import train_davis


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_flags(parser)
    add_training_flags(parser)
    add_source_flags(parser, "--davis-root",
                     "DAVIS 2017 folder (default: the generated video set, made once)")
    args = parser.parse_args(argv)
    cfg, opts = training_setup(parser, args, args.davis_root, transform=as_video)
    summary = train_davis(cfg, opts)
    m = summary["metrics"]
    print(f"\nJ&F {m['J&F-Mean']:.4f}   J {m['J-Mean']:.4f}   F {m['F-Mean']:.4f}")
    print(f"best checkpoint: {summary['checkpoint']}")
    print(f"MLflow run {summary['mlflow_run_id']}; open the UI with:\n  {ui_command(summary['tracking_uri'])}")
    return summary


if __name__ == "__main__":
    main()
