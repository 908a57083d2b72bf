"""Command-line pieces several ``tgated`` commands share, so that they read and fail alike."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Iterator

from ..compat import moved_names

if TYPE_CHECKING:
    from ..progress import Progress

PROGRESS_CHOICES = ["tqdm", "json", "none"]


def add_progress_option(parser, json_note: str = "json") -> None:
    """``--progress tqdm|json|none``; ``json_note`` says who reads the JSON lines (e.g. "json, for Slicer")."""
    parser.add_argument(
        "--progress",
        choices=PROGRESS_CHOICES,
        default="tqdm",
        help=f"progress bars on stderr (tqdm), JSON lines on stdout ({json_note}) or none",
    )


def add_slice_layout_option(parser, default: str, help: str) -> None:
    """``--slice-layout radiological|reference`` (its default listed first); :func:`slice_layout` reads it."""
    choices = [default] + [name for name in ("radiological", "reference") if name != default]
    parser.add_argument("--slice-layout", choices=choices, default=default, help=help)


def slice_layout(name: str) -> tuple[str, ...]:
    """The ``PreprocessConfig.slice_layout`` a ``--slice-layout`` name stands for."""
    from ..model.configuration import REFERENCE_SLICE_LAYOUT
    from ..preprocessing.config import PreprocessConfig

    return REFERENCE_SLICE_LAYOUT if name == "reference" else PreprocessConfig().slice_layout


@contextlib.contextmanager
def progress_for(args) -> Iterator[Progress]:
    """The ``--progress`` display as a :class:`Progress`, closed when the block ends, however it ends."""
    from ..progress import make_progress

    progress = make_progress(None if args.progress == "none" else args.progress)
    try:
        yield progress
    finally:
        progress.close()


def add_compute_options(
    parser, batch_size: bool = True, amp: bool = True, device_default: str | None = "auto", precision: bool = False
) -> None:
    """``--device`` and, for the commands that run a model, ``--batch-size`` and ``--amp``.

    ``device_default`` None: the command fills it in later (a resumed run keeps its own device).
    ``precision`` (the inference commands: segment, serve): ``--precision``, and a batch size that
    depends on the device (:mod:`..inference.precision`).
    """
    parser.add_argument(
        "--device", default=device_default, help="auto (CUDA if available), cpu or cuda (default: auto)"
    )
    if batch_size and precision:
        parser.add_argument("--batch-size", type=int, help="slices per encoder batch (default: 4 on a CPU, 16 on CUDA)")
    elif batch_size:
        parser.add_argument("--batch-size", type=int, default=4, help="slices per encoder batch (default: 4)")
    if precision:
        from ..inference.precision import PRECISIONS  # no torch: --help stays quick

        parser.add_argument(
            "--precision",
            choices=list(PRECISIONS),
            default="auto",
            help="arithmetic: auto (default: int8 on a CPU, or bf16 where the CPU has native bfloat16; "
            "fp32 on CUDA), fp32 (the reference numbers), int8 (CPU), bf16, fp16 (CUDA)",
        )
    if amp:
        parser.add_argument(
            "--amp",
            choices=["fp16", "bf16"],
            help="mixed precision on CUDA (the same as --precision)"
            if precision
            else "mixed precision on CUDA (default: float32)",
        )


def install_cancel(token, message: str | None = None, immediate: tuple[str, ...] = ("SIGINT",)):
    """SIGINT and SIGTERM cancel ``token`` (the work stops at its next safe point and keeps what it
    must); a second signal named in ``immediate`` raises KeyboardInterrupt at once. ``message`` is
    printed on the first signal. Returns a function that puts the previous handlers back; outside
    the main thread (an embedding application) there are no signals to catch and nothing changes."""

    def _stop(signum, frame):
        if token.cancelled and signal.Signals(signum).name in immediate:
            raise KeyboardInterrupt
        token.cancel()
        if message:
            print(message, file=sys.stderr, flush=True)

    previous = {}
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            try:
                previous[name] = signal.signal(getattr(signal, name), _stop)
            except ValueError:
                pass
    return lambda: [signal.signal(getattr(signal, name), handler) for name, handler in previous.items()]


# The overwrite rule moved down to io.atomic, where the writers use it too.
__getattr__ = moved_names(
    __name__,
    {
        "OVERWRITE_HINT": "TGatedSegmentLib.io.atomic",
        "refuse_existing_output": "TGatedSegmentLib.io.atomic:refuse_existing",
    },
)
