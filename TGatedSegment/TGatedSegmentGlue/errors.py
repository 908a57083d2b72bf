"""Failed runs in plain words: what happened, what to do, and the details (command line, the
backend's last output lines) for the dialog's *Show Details...*, never a bare traceback.

The backend reports user errors as a JSON ``error`` event with a kind, a message and a hint
(``TGatedSegmentLib.errors``); crashes only leave their output and exit code. Both become one
:class:`BackendError`; the hints that name the command line's flags are reworded for the panel.
"""

from __future__ import annotations

import re
from typing import Sequence

from TGatedSegmentLib.errors import EXIT_CANCELLED  # noqa: F401  (exit code of a cancelled backend)

from .i18n import tr as _


class Cancelled(Exception):
    """The user stopped the run; nothing was changed."""


class BackendError(Exception):
    """A failed run in plain words: ``message`` (what happened), ``hint`` (what to do), ``details``
    (command line and the backend's last output lines, for the dialog's details)."""

    def __init__(self, message: str, hint: str | None = None, details: str = "", kind: str = "", returncode=None):
        super().__init__(message)
        self.message, self.hint, self.details, self.kind, self.returncode = message, hint, details, kind, returncode

    def __str__(self) -> str:
        return f"{self.message.rstrip('.')}. {self.hint}" if self.hint else self.message


_MISSING_MODULE = re.compile(r"No module named '([^'.]+)")


def errorFromBackend(
    event: dict | None, returncode: int | None, output: Sequence[str], command: Sequence[str], what: str | None = None
) -> BackendError:
    """A plain-words :class:`BackendError` from the backend's error event (if any), exit code and output.

    ``what`` names the run in the message ("Segmentation", the default; "Training", ...).
    """
    what = what or _("Segmentation")
    event = event or {}
    kind, message, hint = event.get("kind") or "", event.get("message") or "", event.get("hint")
    text = "\n".join(output)
    details = f"Command: {' '.join(map(str, command))}\nExit code: {returncode}\n\nLast output:\n{text}".rstrip()
    missing = _MISSING_MODULE.search(message) or (None if kind else _MISSING_MODULE.search(text))
    if missing:
        return BackendError(
            _("{what} needs the Python package '{package}', which is not installed").format(
                what=what, package=missing.group(1)
            ),
            _(
                "Open the TGatedSegment module and press Apply, or run logic.installDependencies() in the Python "
                "console: it offers to install what is missing (PyTorch through the PyTorch extension)."
            ),
            details,
            "MissingDependency",
            returncode,
        )
    if kind == "DeviceError":
        return BackendError(
            _("{what} cannot use the chosen device: {message}").format(what=what, message=message),
            _(
                "Choose CPU (or Auto) under Advanced > Device, or another device from its list. A GPU "
                "needs a CUDA build of PyTorch: reinstall it with the PyTorch Utils module."
            ),
            details,
            kind,
            returncode,
        )
    if kind == "OutOfMemory":
        return BackendError(
            _("{what} ran out of memory ({message})").format(what=what, message=message),
            _(
                "Choose CPU as the device, or a smaller batch size, under Advanced; or draw a region "
                "of interest around the organs."
            ),
            details,
            kind,
            returncode,
        )
    if kind == "CheckpointError":
        return BackendError(
            _("The model could not be loaded: {message}").format(message=message), hint, details, kind, returncode
        )
    if kind == "InputError":
        return BackendError(
            _("{what} cannot use this input: {message}").format(what=what, message=message),
            hint,
            details,
            kind,
            returncode,
        )
    if kind:
        text = (
            _("{what} failed: {message}").format(what=what, message=message)
            if message
            else _("{what} failed ({kind})").format(what=what, kind=kind)
        )
        return BackendError(text, hint, details, kind, returncode)
    cliError = next((line for line in reversed(output) if line.startswith("tgated: error: ")), None)
    if cliError:  # a command run without --progress json reports its error as this one line
        return BackendError(
            _("{what} failed: {message}").format(what=what, message=cliError[len("tgated: error: ") :].strip()),
            None,
            details,
            "CommandError",
            returncode,
        )
    last = next((line for line in reversed(output) if line.strip()), "no output")
    return BackendError(
        _("{what} stopped unexpectedly (exit code {code}): {last}").format(
            what=what, code=returncode, last=last.strip()[:300]
        ),
        _("See the details; run the same command in a terminal to reproduce it."),
        details,
        "Crash",
        returncode,
    )
