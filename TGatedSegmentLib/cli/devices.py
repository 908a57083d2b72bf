"""``tgated devices``: the compute devices this Python's PyTorch can use (what ``--device`` accepts).

The Slicer module runs it (``--progress json``) to fill its device list without importing torch in
Slicer's own process.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "devices",
        help="list the devices PyTorch can use here (cpu, cuda:N, mps)",
        description="List the compute devices this Python's PyTorch can use, with GPU names and memory: the values "
        "--device accepts besides auto. Also prints the Python and PyTorch versions (a CPU-only PyTorch build "
        "sees no GPU).",
    )
    p.add_argument(
        "--progress",
        choices=["tqdm", "json", "none"],
        default="tqdm",
        help="json: one JSON line on stdout (for Slicer); otherwise a table",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.devices import describe_environment

    report = describe_environment()
    if args.progress == "json":
        print(json.dumps({"event": "done", **report}), flush=True)
        return 0
    cuda = report["cuda_build"] or "none (CPU-only build)"
    print(f"Python {report['python']}, PyTorch {report['torch']}, CUDA build {cuda}", file=sys.stderr)
    for device in report["devices"]:
        memory = f", {device['memory_gb']} GB" if device.get("memory_gb") else ""
        print(f"{device['id']:>8}  {device['name']}{memory}")
    return 0
