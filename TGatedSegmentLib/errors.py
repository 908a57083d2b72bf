"""User-facing errors.

Every problem a user can fix (bad input file, wrong checkpoint, empty prompt, ...) is raised as a
:class:`TGatedError` carrying a one-line message and, where there is one, the fix. The CLI prints
those as a single line and exits with :data:`EXIT_USAGE`; anything else is a bug and keeps its
traceback (behind ``--debug``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SOME_FAILED = 3  # a batch (`tgated segment --output-dir`) where some cases failed and the others were written
EXIT_CANCELLED = 130


class TGatedError(Exception):
    """An error the user can act on: ``message`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else f"{text}."

    def __str__(self) -> str:  # so that str(exc) is the full, actionable line
        return self.one_line()


class InputError(TGatedError):
    """The input volume, dataset or prompt list cannot be used."""


class DeviceError(InputError):
    """The requested compute device (a CUDA GPU, an Apple GPU) is not there; the hint names the ones that are."""


class CheckpointError(TGatedError):
    """A checkpoint is missing, unreadable or does not match the model it claims to be."""


class OutputError(TGatedError):
    """An output location cannot be written."""


class Cancelled(Exception):
    """Raised inside long work when the caller asked it to stop; nothing is written after it."""
