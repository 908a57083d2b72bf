"""``tgated train``: fine-tune T-Gated CLIPSeg (or the slice-wise baseline) on a labelled dataset.

Data, labels and the run folder are checked before torch is even imported, so mistakes cost a
second and write nothing. Under ``torchrun --nproc_per_node N -m TGatedSegmentLib train ...``
the same command trains with DistributedDataParallel. SIGTERM / Ctrl-C stop after the current
step and save it (a second Ctrl-C aborts at once); ``--resume RUN_DIR`` continues.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..compat import deprecated_names
from ..errors import EXIT_CANCELLED, Cancelled, InputError
from ..training.options import cli_settings, may_change_text, resume_may_change
from .common import add_compute_options, add_progress_option, install_cancel

# The flags come from TrainConfig's fields (training/config.py): each field's option declares its
# flag, type, choices and help, and whether a resume may change it (training/options.py).
RUN_FOLDER = "resume"  # its flag names the run folder to continue: build_config's, not a setting


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune the model on labelled volumes (nnU-Net/Decathlon dataset folder)",
        description="Fine-tune CLIPSeg with the T-Gated temporal adapter (or the slice-wise baseline, --no-temporal) "
        "on labelled CT/MR volumes, with the paper's sampling, augmentation and optimiser. Writes RUN_DIR/best "
        "(highest mean validation Dice), RUN_DIR/last and RUN_DIR/resume. Multi-GPU: torchrun --nproc_per_node N "
        "-m TGatedSegmentLib train ...",
    )
    for entry in cli_settings():
        if entry.option.shared:
            continue  # --device and --amp: add_compute_options below, as for the other commands
        text = entry.help.replace("%", "%%")  # argparse formats help with %
        if entry.switch:
            p.add_argument(entry.flag, *entry.option.aliases, action="store_true", help=text)
            continue
        extra = {"choices": list(entry.option.choices)} if entry.option.choices else {}
        p.add_argument(
            entry.flag, *entry.option.aliases, type=entry.option.type, metavar=entry.option.metavar, help=text, **extra
        )
    add_compute_options(p, batch_size=False, device_default=None)
    add_progress_option(p, "json, for Slicer")
    p.set_defaults(func=run)


def _explicit(args) -> dict:
    """Options given on the command line, as TrainConfig fields."""
    values = {}
    for entry in cli_settings():
        given = getattr(args, entry.dest)
        if entry.name != RUN_FOLDER and given is not None and given is not False:
            values[entry.name] = entry.from_flag(given)
    if values.get("freeze_encoders") and values.get("finetune") == "full":
        # with decoder or adapters it is implied (both freeze CLIP)
        raise InputError(
            "--freeze-encoders (the same as --finetune decoder) contradicts --finetune full", "Pass only one of them."
        )
    return values


def build_config(args):
    from ..training.config import TrainConfig, local_path
    from ..training.preflight import resume_config

    given = _explicit(args)
    if args.resume:
        if args.output and args.output != args.resume:
            raise InputError(
                "--resume and --output name different run folders", "Pass only --resume RUN_DIR to continue a run."
            )
        if args.overwrite:
            raise InputError(
                "--resume and --overwrite contradict each other",
                "Use --resume to continue a run, or --overwrite to start it again.",
            )
        may_change = resume_may_change()
        config = resume_config(args.resume, **{k: v for k, v in given.items() if k in may_change})
        paths = {entry.name for entry in cli_settings() if entry.option.path}

        def same(key, value):
            saved = getattr(config, key)
            return local_path(value) == local_path(saved) if key in paths else value == saved

        flags = {entry.name: entry.flag for entry in cli_settings()}
        changed = sorted(k for k in given if k not in may_change and k != "output" and not same(k, given[k]))
        if changed:
            raise InputError(
                f"cannot change {', '.join(flags[k] for k in changed)} when resuming",
                f"Resume with the run's own settings ({may_change_text()} may change), or start a new run.",
            )
        return config
    missing = [name for name in ("data", "output") if name not in given]
    if missing:
        raise InputError(
            f"missing {' and '.join('--' + m for m in missing)}",
            "Run e.g. tgated train --data DATASET --output RUN_DIR (or --resume RUN_DIR).",
        )
    return TrainConfig(**given)


def run(args: argparse.Namespace) -> int:
    import os

    from ..training.preflight import preflight

    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 talks
    if not main_rank:
        import logging

        logging.getLogger("TGatedSegmentLib").setLevel(logging.ERROR)
        args.progress = "none"
    config = build_config(args)
    plan = preflight(config)  # fails here, before torch is imported and before anything is written

    from ..progress import CancelToken, make_progress
    from ..training.trainer import train

    token = CancelToken()
    install_cancel(token)  # SIGTERM and the first Ctrl-C: stop after the current step, saved
    progress = make_progress(None if args.progress == "none" else args.progress)
    try:
        run_dir = train(config, progress=progress, cancel=token, plan=plan)
    except Cancelled:
        progress.close()
        message = (
            f"training stopped; the last complete checkpoints are in {config.run_dir} "
            f"(continue with: tgated train --resume {config.run_dir})"
        )
        if args.progress == "json":
            print(json.dumps({"event": "cancelled", "run_dir": str(config.run_dir)}), flush=True)
        if main_rank:
            print(f"tgated: {message}", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        progress.close()
    if not main_rank:
        return 0
    if args.progress == "json":
        print(
            json.dumps(
                {"event": "done", "run_dir": str(run_dir), "best": str(run_dir / "best"), "last": str(run_dir / "last")}
            ),
            flush=True,
        )
    else:
        print(f"best checkpoint: {run_dir / 'best'}\nlast checkpoint: {run_dir / 'last'}", file=sys.stderr)
    return 0


def _recipe_options() -> tuple:
    return tuple(
        (e.name, e.option.type, e.option.help) for e in cli_settings() if e.option.recipe and e.option.recipe_note
    )


# The tables the flags were declared in before TrainConfig's fields declared them.
__getattr__ = deprecated_names(
    __name__,
    {
        "RECIPE_OPTIONS": (
            _recipe_options,
            "the fields of TrainConfig with option.recipe (training.options.cli_settings)",
        ),
        "RESUME_OVERRIDES": (resume_may_change, "TGatedSegmentLib.training.options.resume_may_change()"),
        "CHOICES": (
            lambda: {e.name: list(e.option.choices) for e in cli_settings() if e.option.choices},
            "the option.choices of TrainConfig's fields (training.options.cli_settings)",
        ),
        "PATH_OPTIONS": (
            lambda: tuple(e.name for e in cli_settings() if e.option.path),
            "the option.path of TrainConfig's fields (training.options.cli_settings)",
        ),
    },
)
