"""``tgated``: one entry point, one subcommand module each.

Every subcommand module exposes ``add_parser(subparsers)`` (which sets ``func``) and returns an
exit code from that function. User errors (:class:`TGatedError`) become one line on stderr and exit
code 2; cancellation exits 130; anything else is a bug and prints its traceback with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys

from .. import __version__
from ..allocator import keep_freed_memory
from ..errors import EXIT_CANCELLED, EXIT_INTERNAL, EXIT_USAGE, Cancelled, TGatedError
from ..inference.precision import passive_waiting_threads

passive_waiting_threads(sys.argv[1:])  # before any subcommand imports torch
keep_freed_memory()  # every tensor-heavy command reuses freed memory instead of faulting it in again

# Subcommand modules, in the order `tgated --help` lists them.
COMMAND_MODULES = [
    "segment",
    "serve",
    "train",
    "evaluate",
    "calibrate",
    "prepare",
    "models",
    "checkpoints",
    "devices",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgated",
        description="Text-prompted 3D organ segmentation (CLIPSeg + T-Gated temporal adapter).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(subparsers)
    return parser


def _install_signal_handlers() -> None:
    """SIGTERM (Slicer's Cancel, `kill`) behaves like Ctrl-C: stop cleanly, write nothing."""

    def _raise(signum, frame):
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise)


def _report(args, payload: dict) -> None:
    if getattr(args, "progress", None) == "json":
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    if not args.debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    _install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except TGatedError as exc:
        _report(args, {"event": "error", "kind": type(exc).__name__, "message": exc.message, "hint": exc.hint})
        print(f"tgated: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except (Cancelled, KeyboardInterrupt):
        _report(args, {"event": "cancelled"})
        print("tgated: cancelled; nothing was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except MemoryError:
        message = "out of memory"
        hint = "Use a smaller --batch-size, or --device cpu if the GPU ran out."
        _report(args, {"event": "error", "kind": "OutOfMemory", "message": message, "hint": hint})
        print(f"tgated: error: {message}. {hint}", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as exc:  # a bug: keep the details available
        if _is_cuda_oom(exc):
            message, hint = "the GPU ran out of memory", "Use a smaller --batch-size, or --device cpu."
            _report(args, {"event": "error", "kind": "OutOfMemory", "message": message, "hint": hint})
            print(f"tgated: error: {message}. {hint}", file=sys.stderr)
            return EXIT_INTERNAL
        _report(args, {"event": "error", "kind": type(exc).__name__, "message": str(exc), "hint": None})
        if args.debug:
            raise
        print(
            f"tgated: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr
        )
        return EXIT_INTERNAL


def _is_cuda_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


if __name__ == "__main__":
    sys.exit(main())
