"""``tgated init`` (untrained checkpoint) and ``tgated import`` (convert the authors' weights)."""

from __future__ import annotations

import argparse
import sys

from ..io.atomic import refuse_existing
from .common import add_slice_layout_option, slice_layout


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "init",
        help="write an untrained checkpoint (random adapter on a CLIPSeg base)",
        description="Write an untrained checkpoint folder: a random T-Gated adapter on a CLIPSeg base that is "
        "either a config file (random weights, for tests and benchmarks) or a pretrained model (folder or hub id).",
    )
    p.add_argument(
        "--base-config",
        required=True,
        metavar="CONFIG.json|HUB_ID|builtin:NAME",
        help="CLIPSeg config file or built-in architecture (builtin:tiny, builtin:rd64-refined; random "
        "weights) or a pretrained model folder / hub id",
    )
    p.add_argument(
        "--tokenizer",
        metavar="DIR|HUB_ID|compact",
        help="CLIP tokenizer folder or hub id; 'compact' builds an offline one from the organ names "
        "(default: the base model's own)",
    )
    p.add_argument("--no-temporal", action="store_true", help="no adapter: the slice-wise CLIPSeg baseline")
    p.add_argument(
        "--adapter-dim", type=int, help="temporal transformer width (default 256, or the encoder width if smaller)"
    )
    p.add_argument("--adapter-layers", type=int, help="temporal transformer layers (default 4)")
    p.add_argument("--adapter-heads", type=int, help="attention heads in the adapter (default 8)")
    p.add_argument("--context", type=int, help="slices per window, odd (default 5)")
    p.add_argument(
        "--probabilistic",
        action="store_true",
        help="Gaussian keys/values in the temporal attention, for uncertainty maps (MedCLIPSeg-style)",
    )
    add_slice_layout_option(
        p, "radiological", "in-plane orientation of model input slices (see docs/usage.md, 'Orientation')"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, metavar="CKPT_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    p.set_defaults(func=run_init)

    p = subparsers.add_parser(
        "import",
        help="convert a checkpoint saved by the authors' T-Gated code",
        description="Convert a .pt/.pth saved by the authors' CLIPSegTemporalAdapter (a bare state dict or their "
        "training dict with 'model_state_dict') into a checkpoint folder. (`tgated models import FILE` converts it "
        "into the model folder instead, to use as --checkpoint NAME.)",
    )
    p.add_argument("weights", metavar="AUTHORS.pt")
    p.add_argument(
        "--base-config",
        required=True,
        metavar="CONFIG.json|HUB_ID",
        help="the CLIPSeg architecture the weights were trained on (e.g. CIDAS/clipseg-rd64-refined)",
    )
    p.add_argument("--tokenizer", metavar="DIR|HUB_ID", help="CLIP tokenizer (default: the base's own)")
    add_slice_layout_option(p, "reference", "in-plane orientation their model saw (default: theirs, see docs/usage.md)")
    p.add_argument("--output", required=True, metavar="CKPT_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    p.set_defaults(func=run_import)


def run_init(args: argparse.Namespace) -> int:
    from ..model.checkpoint import init_checkpoint
    from ..model.clipseg_base import load_clipseg_config
    from ..model.configuration import AdapterConfig
    from ..preprocessing.config import PreprocessConfig

    refuse_existing(args.output, args.overwrite)
    adapter = None
    overrides = {
        k: v
        for k, v in {
            "proj_dim": args.adapter_dim,
            "num_layers": args.adapter_layers,
            "num_heads": args.adapter_heads,
            "context_size": args.context,
        }.items()
        if v
    }
    if args.adapter_heads:
        overrides["spatial_heads"] = args.adapter_heads
    if args.probabilistic:
        overrides["probabilistic"] = True
    if overrides and not args.no_temporal:
        adapter = AdapterConfig.default_for(
            load_clipseg_config(args.base_config).vision_config.hidden_size, **overrides
        )
    path = init_checkpoint(
        args.base_config,
        args.output,
        tokenizer=args.tokenizer,
        temporal=not args.no_temporal,
        adapter=adapter,
        preprocessing=PreprocessConfig(slice_layout=slice_layout(args.slice_layout)),
        seed=args.seed,
    )
    print(f"wrote untrained checkpoint {path}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..model.convert_reference import import_reference_checkpoint

    refuse_existing(args.output, args.overwrite)
    path = import_reference_checkpoint(
        args.weights,
        args.base_config,
        args.output,
        tokenizer=args.tokenizer,
        slice_layout=slice_layout(args.slice_layout),
    )
    print(f"wrote checkpoint {path}", file=sys.stderr)
    return 0
