"""``tgated calibrate``: give an existing checkpoint per-organ thresholds chosen on labelled volumes.

A run trained with ``--thresholds calibrated`` (the ``cpu`` recipe) already has them. This is for
the others: a checkpoint trained before the option existed, with the ``paper`` recipe, or the
zero-shot CLIPSeg, calibrated on a labelled dataset of the user's own scanner. The rule is the
trainer's (:mod:`..evaluation.calibration`); the weights are written unchanged.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .common import add_compute_options, add_progress_option, progress_for


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="choose each organ's threshold on a labelled dataset and write a calibrated checkpoint",
        description="Segment every case of a labelled dataset with the checkpoint, choose for each annotated "
        "organ the probability threshold (0.20-0.70) with the best Dice pooled over the cases (kept at 0.5 unless "
        "another gains at least 0.005), and write a checkpoint that carries them; tgated segment then uses them "
        "unless --threshold is given. Use volumes the model was not trained on where you have them.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint folder or hub id")
    p.add_argument("--data", required=True, metavar="DATASET", help="labelled dataset folder (as for tgated train)")
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="NEW_CKPT",
        help="the calibrated checkpoint folder (the same folder as --checkpoint only with --overwrite)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder at --output")
    add_compute_options(p, amp=False)
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.dataset import load_dataset
    from ..io.atomic import check_writable, refuse_existing

    refuse_existing(args.output, args.overwrite)
    check_writable(args.output)
    dataset = load_dataset(args.data)

    from ..evaluation.calibration import calibrate_checkpoint
    from ..evaluation.evaluate import dataset_cases

    with progress_for(args) as progress:
        thresholds = calibrate_checkpoint(
            args.checkpoint,
            dataset_cases(dataset),
            args.output,
            device=args.device,
            batch_size=args.batch_size,
            progress=progress,
            total=len(dataset.cases),
        )
    if not thresholds:
        raise InputError(
            f"no case of '{args.data}' has voxels of an organ the checkpoint was asked for",
            "Pass a dataset whose labels contain the organs to calibrate.",
        )
    if args.progress == "json":
        progress.emit({"event": "done", "output": str(args.output), "thresholds": thresholds})
    else:
        for organ, value in thresholds.items():
            print(f"{organ:>24}: {value:.2f}", file=sys.stderr)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
