"""``tgated prepare``: convert a downloaded public dataset into the nnU-Net v2 layout ``tgated train`` reads."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_progress_option, progress_for


def add_parser(subparsers) -> None:
    from ..data.converters import DATASETS

    p = subparsers.add_parser(
        "prepare",
        help="convert a public dataset (TotalSegmentator, AMOS22, FLARE22, BTCV, CHAOS) for training",
        description="Convert a downloaded public dataset into the nnU-Net v2 layout (imagesTr/CASE_0000.nii.gz, "
        "labelsTr/CASE.nii.gz, dataset.json) that tgated train and tgated evaluate read. Label names are the organ "
        "vocabulary's; dataset.json's label_table gives each label's prompt, the dataset's own name and SNOMED CT "
        "codes. Nothing is downloaded: see docs/datasets.md for where to get each dataset. The output is built "
        "under a temporary name and appears only when complete.",
    )
    p.add_argument("dataset", metavar="DATASET", type=str.lower, choices=list(DATASETS), help=", ".join(DATASETS))
    p.add_argument("--input", "-i", required=True, metavar="DIR", help="the extracted dataset folder")
    p.add_argument("--output", "-o", required=True, metavar="OUT_DIR", help="the nnU-Net dataset folder to write")
    p.add_argument(
        "--modality",
        metavar="M",
        type=str.lower,
        help="amos22: all (default), ct or mr; chaos: t2 (default), t1-in or t1-out; "
        "totalsegmentator: auto (default), ct or mr; flare22, btcv: ct",
    )
    p.add_argument(
        "--split",
        default="all",
        type=str.lower,
        help="totalsegmentator: all, train, val or test (from meta.csv); amos22: all, train or val",
    )
    p.add_argument("--limit", type=int, metavar="N", help="convert only the first N cases (a quick trial)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (at the end)")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.converters import prepare

    with progress_for(args) as progress:
        summary = prepare(
            args.dataset,
            args.input,
            args.output,
            modality=args.modality,
            split=args.split,
            limit=args.limit,
            overwrite=args.overwrite,
            progress=progress,
        )
    if args.progress == "json":
        print(json.dumps({"event": "done", **summary}), flush=True)
    else:
        print(
            f"wrote {summary['cases']} case(s) with {len(summary['labels'])} label(s) to {summary['output']}",
            file=sys.stderr,
        )
        for note in summary["skipped"]:
            print(f"note: skipped {note}", file=sys.stderr)
    return 0
