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

from ..errors import EXIT_CANCELLED, Cancelled, InputError
from ..training.recipes import RECIPES
from .common import add_compute_options, add_progress_option, install_cancel

PATH_OPTIONS = ("data", "val", "base", "tokenizer", "cache_dir")
# TrainConfig fields a recipe sets, as (field, type, help): each becomes --field-name
RECIPE_OPTIONS = (
    ("epochs", int, "epochs"),
    ("steps", int, "stop after this many optimiser steps in all"),
    ("batching", str, "pairs: one (window, organ) per sample (the paper); slices: chunks of consecutive slices, every "
                      "annotated organ decoded for every encoded slice"),
    ("batch_size", int, "pairs, or centre slices, per step and process"),
    ("chunk_slices", int, "consecutive centre slices per chunk (--batching slices)"),
    ("samples_per_epoch", int, "epoch length in pairs or chunks"),
    ("lr_encoder", float, "learning rate of the CLIP vision encoder (and of the text encoder without --lr-text)"),
    ("lr_text", float, "learning rate of the CLIP text encoder and projection"),
    ("lr_decoder", float, "learning rate of the CLIPSeg decoder"),
    ("lr_adapter", float, "learning rate of the temporal adapter and the refinement head"),
    ("weight_decay", float, "AdamW weight decay"),
    ("schedule", str, "restarts (the paper's warm restarts) or cosine (warm-up, then one cosine over the budget)"),
    ("warmup_steps", int, "linear warm-up steps (--schedule cosine)"),
    ("restart_epochs", int, "epochs per warm restart (--schedule restarts)"),
    ("min_lr", float, "lowest learning rate of the schedule"),
    ("grad_clip", float, "gradient-norm clipping"),
    ("dice", str, "sample (per-sample Dice, the paper) or batch (per prompt over the batch)"),
    ("exclusive", float, "weight of the one-organ-per-pixel softmax over each slice's prompts (--batching slices)"),
    ("hard_pixels", float, "weight of the BCE of each item's hardest 1 % of pixels (hard example mining)"),
    ("gate_penalty", float, "weight of the gate penalty"),
    ("negative_ratio", float, "negatives per positive (--batching pairs)"),
    ("max_rotation", float, "in-plane rotation augmentation, degrees"),
    ("max_zoom", float, "in-plane zoom augmentation, 1 +- this (--batching slices)"),
    ("intensity", float, "contrast/brightness/gamma jitter (--batching slices)"),
    ("organ_intensity", float, "move each labelled organ's intensity level by up to +- this, one organ at a time "
                               "(0-1 scale; for MR from few patients; --batching slices)"),
    ("flip_probability", float, "left-right flips of organs without a side (--batching pairs)"),
    ("boundary_weight", float, "extra draws of the 2 slices beyond each organ's extent (--batching slices)"),
    ("hint_weight", float, "extra draws of the slices a dataset lists as hard (--batching slices)"),
    ("adapter", str, "a new adapter's wiring: residual (zero-initialised addition to the last activation), "
                     "reference (the authors') or control (the residual adapter fed 5 copies of the centre slice)"),
    ("refine", int, "channels of a new full-resolution refinement head (0: none)"),
    ("image_size", int, "model input size in px (a pretrained base: its own, 352)"),
)
CHOICES = {"batching": ["pairs", "slices"], "schedule": ["restarts", "cosine"], "dice": ["sample", "batch"],
           "adapter": ["residual", "reference", "control"]}
# Options a resumed run may change; everything else comes from the run's own settings.
RESUME_OVERRIDES = ("epochs", "steps", "max_seconds", "device", "num_workers", "val_batch_size", "save_every_steps",
                    "save_every_minutes")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune the model on labelled volumes (nnU-Net/Decathlon dataset folder)",
        description="Fine-tune CLIPSeg with the T-Gated temporal adapter (or the slice-wise baseline, --no-temporal) "
        "on labelled CT/MR volumes, with the paper's sampling, augmentation and optimiser. Writes RUN_DIR/best "
        "(highest mean validation Dice), RUN_DIR/last and RUN_DIR/resume. Multi-GPU: torchrun --nproc_per_node N "
        "-m TGatedSegmentLib train ...",
    )
    p.add_argument("--data", metavar="DATASET", help="dataset folder (dataset.json + imagesTr/ + labelsTr/, or "
                   "labels.json + image/label pairs)")
    p.add_argument("--val", metavar="DATASET|split:N", help="validation dataset folder, or split:N to hold out N "
                   "cases of --data chosen by --seed (default: validate on the training volumes, an overfitting check)")
    p.add_argument("--output", "-o", metavar="RUN_DIR", help="run folder (best/, last/, resume/, cache/)")
    p.add_argument("--base", metavar="CKPT_DIR|CONFIG.json|builtin:NAME|HUB_ID",
                   help="starting model: a checkpoint folder (e.g. from `tgated init`), a CLIPSeg config or built-in "
                        "architecture (random weights) or a CLIPSeg folder / hub id (pretrained; default "
                        "CIDAS/clipseg-rd64-refined, needs the network once)")
    p.add_argument("--tokenizer", metavar="DIR|HUB_ID|compact", help="CLIP tokenizer (default: the base's own)")
    p.add_argument("--recipe", choices=list(RECIPES),
                   help="a complete set of training settings: cpu (random weights on a CPU in minutes: builtin:cpu, "
                        "multi-prompt slice batches, one cosine over the budget) or paper (the paper's, for a "
                        "pretrained base). Default: cpu for a builtin:/config-file base, paper otherwise; any flag "
                        "below overrides the recipe's value")
    p.add_argument("--max-minutes", type=float, help="stop after this much training time (then validate and save)")
    for name, kind, text in RECIPE_OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), type=kind, **({"choices": CHOICES[name]} if name in CHOICES else {}),
                       help=f"{text} (default: the recipe's)")
    p.add_argument("--no-temporal", action="store_true", help="train the slice-wise CLIPSeg baseline (ablation)")
    p.add_argument("--finetune", choices=["full", "decoder", "adapters"],
                   help="what trains: full (everything, the paper's default), decoder (CLIPSeg decoder and adapters; "
                        "CLIP frozen) or adapters (temporal adapter and PEFT adapters only; CLIP and decoder frozen). "
                        "decoder and adapters save only the trained weights, on top of the base")
    p.add_argument("--freeze-encoders", action="store_true",
                   help="keep the CLIP vision and text encoders fixed: the same as --finetune decoder")
    p.add_argument("--peft", choices=["dense", "shallow"],
                   help="add VLSM bottleneck adapters to the CLIP encoders (zero-initialised): dense (after attention "
                        "and MLP of each encoder layer) or shallow (on the encoder outputs and the prompt embedding)")
    p.add_argument("--peft-dim", type=int, help="bottleneck width of the PEFT adapters (default 64 dense, 512 shallow)")
    p.add_argument("--peft-parts", metavar="LIST",
                   help="comma list of vision, text, conditional: where the PEFT adapters go (default all three)")
    p.add_argument("--lr-peft", type=float, help="PEFT adapters (default 1e-3 dense, 3e-4 shallow, as VLSM-Adapter)")
    p.add_argument("--probabilistic", action="store_true",
                   help="probabilistic temporal attention (Gaussian keys/values) for uncertainty maps; a deterministic "
                        "base initialises its means")
    p.add_argument("--token-cache", action="store_true",
                   help="with a frozen vision encoder (--finetune decoder|adapters) and no pixel augmentation: encode "
                        "every training slice once, store the tokens beside the volume cache and train from them "
                        "(several times faster on a CPU at the real model size)")
    p.add_argument("--cache-dir", metavar="DIR", help="preprocessed-volume cache, shareable between runs "
                   "(default RUN_DIR/cache)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last saved step")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in RUN_DIR (keeps its cache)")
    add_compute_options(p, batch_size=False, device_default=None)
    p.add_argument("--num-workers", type=int, help="data loading processes (default: 2 on CUDA, 0 on CPU)")
    p.add_argument("--seed", type=int, help="seed for initialisation, sampling and the split (default 0)")
    p.add_argument("--save-every-steps", type=int, help="also save last/ and resume/ every N steps")
    add_progress_option(p, "json, for Slicer")
    p.set_defaults(func=run)


def _explicit(args) -> dict:
    """Options given on the command line, as TrainConfig fields."""
    values = {
        "data": args.data, "val": args.val, "output": args.output, "base": args.base, "tokenizer": args.tokenizer,
        "recipe": args.recipe, **{name: getattr(args, name) for name, _, _ in RECIPE_OPTIONS},
        "amp": args.amp, "cache_dir": args.cache_dir,
        "device": args.device, "num_workers": args.num_workers, "seed": args.seed,
        "save_every_steps": args.save_every_steps,
        "max_seconds": args.max_minutes * 60.0 if args.max_minutes is not None else None,
    }
    if args.no_temporal:
        values["temporal"] = False
    if args.freeze_encoders:
        if args.finetune == "full":  # with decoder or adapters it is implied (both freeze CLIP)
            raise InputError("--freeze-encoders (the same as --finetune decoder) contradicts --finetune full",
                             "Pass only one of them.")
        values["freeze_encoders"] = True
    if args.probabilistic:
        values["probabilistic"] = True
    if args.token_cache:
        values["token_cache"] = True
    values.update(finetune=args.finetune, peft=args.peft, peft_dim=args.peft_dim, peft_parts=args.peft_parts,
                  lr_peft=args.lr_peft)
    return {k: v for k, v in values.items() if v is not None}


def build_config(args):
    from ..training.config import TrainConfig, local_path
    from ..training.preflight import resume_config

    given = _explicit(args)
    if args.resume:
        if args.output and args.output != args.resume:
            raise InputError("--resume and --output name different run folders",
                             "Pass only --resume RUN_DIR to continue a run.")
        if args.overwrite:
            raise InputError("--resume and --overwrite contradict each other",
                             "Use --resume to continue a run, or --overwrite to start it again.")
        config = resume_config(args.resume, **{k: v for k, v in given.items() if k in RESUME_OVERRIDES})
        def same(key, value):
            saved = getattr(config, key)
            return local_path(value) == local_path(saved) if key in PATH_OPTIONS else value == saved

        changed = sorted(k for k in given if k not in RESUME_OVERRIDES and k != "output" and not same(k, given[k]))
        if changed:
            raise InputError(f"cannot change {', '.join('--' + k.replace('_', '-') for k in changed)} when resuming",
                             "Resume with the run's own settings (--epochs, --steps, --max-minutes, --device and "
                             "--num-workers may change), or start a new run.")
        return config
    missing = [name for name in ("data", "output") if name not in given]
    if missing:
        raise InputError(f"missing {' and '.join('--' + m for m in missing)}",
                         "Run e.g. tgated train --data DATASET --output RUN_DIR (or --resume RUN_DIR).")
    return TrainConfig(**given, overwrite=args.overwrite)


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
        message = (f"training stopped; the last complete checkpoints are in {config.run_dir} "
                   f"(continue with: tgated train --resume {config.run_dir})")
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
        print(json.dumps({"event": "done", "run_dir": str(run_dir), "best": str(run_dir / "best"),
                          "last": str(run_dir / "last")}), flush=True)
    else:
        print(f"best checkpoint: {run_dir / 'best'}\nlast checkpoint: {run_dir / 'last'}", file=sys.stderr)
    return 0
