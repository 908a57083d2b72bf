"""What the two training-step benchmarks share (``train_throughput.py``, ``finetune_modes.py``): the
command line and a fixed random batch in the trainer's format. Not a benchmark itself."""

from __future__ import annotations

import argparse
import os
import platform

import torch


def add_arguments(parser: argparse.ArgumentParser, per: str) -> None:
    """``--quick``, ``--arch``, ``--batch-size``, ``--steps`` (per ``per``), ``--threads``, ``--json``."""
    parser.add_argument("--quick", action="store_true", help="tiny model, 64x64, 1 timed step")
    parser.add_argument("--arch", default=None, help="built-in architecture (default builtin:rd64-refined)")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per step (default 2; paper 8)")
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps per {per} (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def resolve(args: argparse.Namespace) -> tuple[str, int, int]:
    """(architecture, batch, timed steps) from ``args``; sets the torch threads and quiets transformers."""
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    arch = args.arch or ("builtin:tiny" if args.quick else "builtin:rd64-refined")
    return arch, args.batch_size or 2, args.steps or (1 if args.quick else 3)


def random_batch(batch: int, context: int, size: int, prompts: int) -> dict:
    """A fixed (seed 0) batch as the trainer's loader yields it: 5-slice pixels, masks, prompt indices."""
    generator = torch.Generator().manual_seed(0)
    return {
        "pixels": torch.randn(batch, context, 3, size, size, generator=generator),
        "target": (torch.rand(batch, size, size, generator=generator) > 0.8).float(),
        "prompt": torch.arange(batch) % prompts,
    }


def machine_line() -> str:
    """What every benchmark prints about the machine it measured on."""
    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), CPU"
    )
