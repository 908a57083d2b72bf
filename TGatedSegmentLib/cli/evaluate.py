"""``tgated evaluate``: per-organ volumetric Dice, NSD and HD95 of one or more checkpoints, side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError, OutputError
from .common import add_compute_options, add_progress_option, progress_for


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score checkpoints on a labelled dataset (Dice, surface Dice, HD95)",
        description="Segment every case of a labelled dataset with each checkpoint (whole volumes, native "
        "resolution) and score the organs each case is annotated for: volumetric Dice, normalised surface Dice at "
        "--tolerance mm and HD95 in mm. Prints markdown tables; with --output also writes metrics.csv, "
        "summary.csv, report.json, report.md, dice.png and dice_box.png (if matplotlib is installed) and "
        "worst_slices/ORGAN.png (each checkpoint's worst slice per organ, linked from report.md). Empty masks: both empty "
        "is not scored; one empty gives Dice 0, NSD 0 and HD95 = the volume's diagonal.",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="CKPT",
        help="checkpoint folder or hub id; repeat to compare several",
    )
    p.add_argument("--data", required=True, metavar="DATASET", help="labelled dataset folder (as for tgated train)")
    p.add_argument("--output", "-o", metavar="REPORT_DIR", help="write the report files here")
    p.add_argument("--tolerance", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    add_compute_options(p)
    p.add_argument("--no-chart", action="store_true", help="do not draw dice.png and dice_box.png")
    p.add_argument(
        "--no-overlays",
        action="store_true",
        help="do not draw worst_slices/ (per organ, each checkpoint's slice with the most wrong area)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing report folder")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.dataset import load_dataset
    from ..io.atomic import check_writable, refuse_non_empty

    if not args.tolerance >= 0:
        raise InputError(f"--tolerance must be >= 0 mm, got {args.tolerance}", "Pass e.g. --tolerance 2.")
    if args.output:
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise OutputError(f"'{out}' is a file, not a folder", "Pass a folder for the report.")
        refuse_non_empty(out, args.overwrite, "the report folder")
        check_writable(out / "report.json")
    dataset = load_dataset(args.data)

    from ..evaluation.evaluate import WrittenReport, evaluate

    with progress_for(args) as progress:
        report = evaluate(
            args.checkpoint,
            dataset,
            tolerance_mm=args.tolerance,
            device=args.device,
            batch_size=args.batch_size,
            amp=args.amp,
            progress=progress,
            worst_slices=bool(args.output) and not args.no_overlays,
        )
    written, note = report.write(args.output, chart=not args.no_chart) if args.output else WrittenReport([])
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.progress == "json":
        summary = {name: report.summary(name) for name in report.checkpoints}
        from ..io.jsonfile import jsonable

        print(
            json.dumps({"event": "done", "outputs": [str(p) for p in written], "summary": jsonable(summary)}),
            flush=True,
        )
    else:
        print(report.to_markdown())
        if written:
            print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0
