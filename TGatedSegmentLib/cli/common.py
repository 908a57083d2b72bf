"""Command-line pieces several ``tgated`` commands share, so that they read and fail alike."""

from __future__ import annotations

from pathlib import Path

from ..errors import OutputError

PROGRESS_CHOICES = ["tqdm", "json", "none"]
OVERWRITE_HINT = "Pass --overwrite to replace it, or choose another --output."


def add_progress_option(parser, json_note: str = "json") -> None:
    """``--progress tqdm|json|none``; ``json_note`` says who reads the JSON lines (e.g. "json, for Slicer")."""
    parser.add_argument("--progress", choices=PROGRESS_CHOICES, default="tqdm",
                        help=f"progress bars on stderr (tqdm), JSON lines on stdout ({json_note}) or none")


def refuse_existing_output(path: str | Path, overwrite: bool, hint: str = OVERWRITE_HINT) -> None:
    """The one "output exists, use --overwrite" error, before any work is done."""
    if Path(path).exists() and not overwrite:
        raise OutputError(f"'{path}' already exists", hint)
