"""``tgated segment``: one volume in, one segmentation (and optional probabilities) out.

With ``--output-dir`` it segments many volumes with one model load (``segment_batch.py``).

Everything that can be checked before the model runs is checked first (output location, prompts,
input file), so a mistake costs seconds, not minutes; outputs are written atomically at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..modality import MODALITIES
from .common import add_compute_options, add_progress_option, progress_for

SEGMENTATION_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".dcm")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment organs named by text prompts in a CT/MR volume",
        description="Segment the organs named by text prompts in a CT or MR volume (NIfTI, NRRD, MHA or a DICOM "
        "series folder). The output has exactly the input's grid: a Slicer .seg.nrrd (one named segment per prompt, "
        "overlaps kept), a .nii.gz labelmap with a JSON label table, or, for a DICOM series input, a .dcm DICOM-SEG "
        "that references the series (needs the dicom extra: highdicom).",
        epilog="Batch mode: --output-dir DIR (instead of --output) segments every INPUT with one model load: "
        "several paths, glob patterns (quoted; expanded by tgated, also on Windows), @LIST.txt or --inputs-from "
        "LIST.txt (one path per line; blank lines and lines starting with # skipped; relative paths from the "
        "list's folder). Outputs are named after the inputs (ct.nii.gz -> DIR/ct.seg.nrrd, a DICOM folder -> its "
        "name; clashing names get their parent folder's name in front), --output-format sets their type. A case "
        "that fails is reported and skipped; DIR/summary.json lists every case. Exit codes: 0 all written, "
        "3 some cases failed, 2 a usage error or no case could be segmented (1 if all by internal errors), "
        "130 cancelled (the first Ctrl-C or SIGTERM stops after the current case).",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="volume file or DICOM series folder; with --output-dir also several, globs or @LIST.txt",
    )
    p.add_argument(
        "--inputs-from",
        action="append",
        metavar="LIST.txt",
        help="batch mode: a text file with one input per line (may be repeated)",
    )
    p.add_argument(
        "--prompts", metavar="TEXT", help='organ names, comma or newline separated, e.g. "liver, left kidney"'
    )
    p.add_argument("--preset", metavar="NAME", help="a prompt preset: abdomen13 (the 13 FLARE22 organs)")
    p.add_argument(
        "--checkpoint",
        metavar="PATH|HUB_ID",
        help="checkpoint folder or hub id (default: zero-shot CIDAS/clipseg-rd64-refined, needs network once)",
    )
    outputs = p.add_mutually_exclusive_group(required=True)
    outputs.add_argument(
        "--output",
        "-o",
        metavar="OUT.seg.nrrd|OUT.nii.gz|OUT.dcm",
        help="the segmentation file of the one INPUT (its ending sets the format)",
    )
    outputs.add_argument(
        "--output-dir", metavar="DIR", help="batch mode: one segmentation per INPUT in DIR, plus summary.json"
    )
    p.add_argument(
        "--output-format",
        type=_batch_suffix,
        metavar="SUFFIX",
        help="batch mode: seg.nrrd (default), nii.gz, nii, nrrd, mha or dcm (DICOM series inputs)",
    )
    p.add_argument(
        "--probabilities",
        metavar="OUT",
        help="also write per-prompt probability maps: a folder "
        "(one volume per prompt) or a .nii.gz/.nrrd file (one multi-component volume)",
    )
    p.add_argument(
        "--uncertainty",
        type=int,
        default=0,
        metavar="N",
        help="N Monte Carlo passes of adapter + decoder per slice (encoder once): writes entropy maps",
    )
    p.add_argument(
        "--uncertainty-output",
        metavar="DIR",
        help="folder for the uncertainty maps (default: next to --output, named OUTPUT_uncertainty)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="one probability threshold for every prompt (default: the checkpoint's: each organ's calibrated on "
        "its validation volumes where it has them, else 0.5)",
    )
    p.add_argument("--modality", default="auto", choices=MODALITIES, help="intensity handling (default: auto)")
    add_compute_options(p, precision=True)
    add_progress_option(p, "json, for Slicer")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def _batch_suffix(value: str) -> str:
    from .segment_batch import output_suffix

    return output_suffix(value)


def _single_input(args: argparse.Namespace) -> str:
    """The one INPUT of ``--output FILE``; anything that names several volumes points to --output-dir."""
    from ..errors import InputError

    if args.output_format:
        raise InputError(
            "--output-format goes with --output-dir",
            "With --output FILE the file name's ending sets the format (e.g. -o ct.seg.nrrd).",
        )
    hint = "Pass one INPUT with --output FILE, or several (paths, a glob, @LIST.txt) with --output-dir DIR."
    if not args.inputs and not args.inputs_from:
        raise InputError("no INPUT given", hint)
    if len(args.inputs) != 1 or args.inputs_from or args.inputs[0].startswith("@"):
        raise InputError("several inputs need --output-dir", hint)
    return args.inputs[0]


def check_output(path: str, overwrite: bool, suffixes=SEGMENTATION_SUFFIXES) -> None:
    from ..io.atomic import check_writable, refuse_existing

    if not path.lower().endswith(suffixes):
        raise OutputError(
            f"unsupported output format '{Path(path).name}'", f"End the output name with one of: {', '.join(suffixes)}."
        )
    refuse_existing(path, overwrite)
    check_writable(path)


def check_dicom_seg_source(output: str, source: str, image) -> None:
    """For a .dcm output: highdicom installed, and a DICOM series that lines up with ``image``.

    All of it is known before the model runs, so a non-DICOM input fails in a second, not after
    the segmentation.
    """
    from ..io.dicom_seg import DICOM_SEG_SUFFIX, check_alignment, source_series
    from ..io.volume import Geometry

    if output.lower().endswith(DICOM_SEG_SUFFIX):
        check_alignment(source_series(source), Geometry.from_image(image), source)


def run(args: argparse.Namespace) -> int:
    from ..io.atomic import check_writable, overwrite_hint, refuse_existing
    from ..io.volume import read_image
    from ..vocabulary import resolve_prompts

    if args.output_dir:
        from .segment_batch import run as run_batch

        return run_batch(args)
    args.input = _single_input(args)
    check_output(args.output, args.overwrite)
    if args.probabilities:
        refuse_existing(args.probabilities, args.overwrite, overwrite_hint(None))
        check_writable(args.probabilities)
    uncertainty_dir = None
    if args.uncertainty:
        if args.uncertainty < 2:
            raise OutputError("--uncertainty needs at least 2 samples", "Use e.g. --uncertainty 10.")
        from ..io.atomic import split_suffixes

        stem = split_suffixes(Path(args.output))[0]
        uncertainty_dir = args.uncertainty_output or str(Path(args.output).with_name(f"{stem}_uncertainty"))
        refuse_existing(uncertainty_dir, args.overwrite, overwrite_hint(None))
        check_writable(Path(uncertainty_dir) / "x")
    organs = resolve_prompts(args.prompts, args.preset)
    image = read_image(args.input)
    check_dicom_seg_source(args.output, args.input, image)
    from ..inference.api import Segmenter  # torch and transformers load only once the inputs are known good

    with progress_for(args) as progress:
        progress.update("load", 0, 1)
        segmenter = Segmenter(
            args.checkpoint, device=args.device, batch_size=args.batch_size, amp=args.amp, precision=args.precision
        )
        progress.update("load", 1, 1)
        result = segmenter.segment(
            image,
            prompts=organs,
            modality=args.modality,
            threshold=args.threshold,
            return_probabilities=bool(args.probabilities),
            uncertainty=args.uncertainty,
            progress=progress,
        )
        progress.update("write", 0, 1)
        written = result.write(args.output, overwrite=args.overwrite, source=args.input)
        if args.probabilities:
            written += result.write_probabilities(args.probabilities, overwrite=args.overwrite)
        if uncertainty_dir:
            written += result.write_uncertainty(uncertainty_dir, overwrite=args.overwrite)
        progress.update("write", 1, 1)
    summary = result.summary()
    done: dict[str, Any] = {
        "event": "done",
        "outputs": [str(p) for p in written],
        "device": result.device,
        "modality": result.modality,
        "seconds": round(result.seconds, 2),
        "segments": summary,
        "uncertainty": result.uncertainty,
    }
    if args.progress == "json":
        progress.emit(done)
    else:
        for row in summary:
            print(
                f"{row['name']:>24}: {row['voxels']:>9} voxels, {row['volume_ml']:>9.1f} ml"
                f" (threshold {row['threshold']:.2f})",
                file=sys.stderr,
            )
        print(f"wrote {', '.join(done['outputs'])} in {done['seconds']} s on {result.device}", file=sys.stderr)
    return 0
