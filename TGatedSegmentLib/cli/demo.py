"""``tgated demo``: generate phantoms, train a small T-Gated model, segment a held-out phantom, write OUTPUT/.

Works offline on a CPU in under five minutes (``--quick``: seconds). The output folder is checked
before anything runs and appears only complete, at the end (Ctrl-C leaves nothing behind).
"""

from __future__ import annotations

import argparse
import sys

from .common import add_compute_options, add_progress_option, progress_for


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole job offline: train a small model on synthetic phantoms, segment a held-out one",
        description="Generate synthetic abdominal CT phantoms, train a small T-Gated CLIPSeg on them from random "
        "weights with the cpu training recipe (under 5 minutes on a 2-core CPU), segment a phantom it has not seen and write OUTPUT/: the CT, the "
        "segmentation (.seg.nrrd and .nii.gz + label table), the reference, a PNG figure, per-organ metrics (JSON) "
        "and the checkpoint. Per-organ Dice is printed at the end.",
    )
    p.add_argument("--output", "-o", default="demo_output", metavar="DIR", help="output folder (default: demo_output)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long run on tiny phantoms (checks the pipeline; the model does not learn much)",
    )
    p.add_argument(
        "--base",
        metavar="CKPT_DIR|CLIPSEG_DIR|HUB_ID",
        help="start from these weights instead of random ones (a checkpoint or CLIPSeg folder, or a hub "
        "id, which needs the network once); trained with the paper's learning rates",
    )
    add_compute_options(p, batch_size=False, amp=False)
    p.add_argument("--seed", type=int, default=0, help="phantoms, initialisation and sampling (default 0)")
    p.add_argument(
        "--minutes",
        type=float,
        metavar="M",
        help="cap the training time (default: the demo's steps, capped at 4.5 minutes)",
    )
    add_progress_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder (at the end)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # run_demo checks --output, --minutes and --base before it generates or trains anything
    from ..demo import run_demo

    with progress_for(args) as progress:
        result = run_demo(
            args.output,
            quick=args.quick,
            base=args.base,
            device=args.device,
            seed=args.seed,
            minutes=args.minutes,
            overwrite=args.overwrite,
            progress=progress,
        )
    if args.progress == "json":
        from ..io.jsonfile import jsonable

        progress.emit(
            jsonable(
                {
                    "event": "done",
                    "output": str(result.output),
                    "seconds": round(result.seconds, 1),
                    "dice": result.dice,
                    "mean_dice": result.metrics["mean_dice"],
                }
            )
        )
        return 0
    training = result.metrics["training"]
    print(
        f"\nper-organ metrics on a held-out phantom (not in training or validation), after {training['steps']} "
        f"training steps ({training['seconds']:.0f} s):\n"
    )
    print(result.table())
    print(
        f"\nwrote {result.output}/ in {result.seconds:.0f} s: "
        + ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in result.output.iterdir()))
    )
    print(
        f"view it: tgated segment {result.output}/ct.nii.gz --checkpoint {result.output}/checkpoint "
        f"--prompts liver -o liver.seg.nrrd   (or load ct.nii.gz and segmentation.seg.nrrd in 3D Slicer)"
    )
    sys.stdout.flush()
    return 0
