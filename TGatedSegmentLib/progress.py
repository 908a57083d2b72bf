"""Progress reporting and cancellation shared by inference, training and the CLI.

Long work reports ``(stage, done, total)`` through a :class:`Progress` object and polls a
:class:`CancelToken` between units of work. The same events drive a tqdm bar in a shell, JSON lines
for the Slicer module (``--progress json``) or a plain callback from Python.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, TextIO

from .errors import Cancelled

ProgressCallback = Callable[[dict], None]


class CancelToken:
    """A thread-safe stop flag; ``check()`` raises :class:`Cancelled` once it is set."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class Progress:
    """Base reporter: forwards events to an optional callback. Subclasses render them."""

    def __init__(self, callback: ProgressCallback | None = None):
        self.callback = callback

    def emit(self, event: dict) -> None:
        if self.callback is not None:
            self.callback(event)

    def update(self, stage: str, done: int, total: int, **extra: Any) -> None:
        self.emit({"event": "progress", "stage": stage, "done": int(done), "total": int(total), **extra})

    def info(self, **fields: Any) -> None:
        self.emit({"event": "info", **fields})

    def close(self) -> None:
        pass


class JsonProgress(Progress):
    """One JSON object per line on ``stream`` (stdout by default), flushed at once."""

    def __init__(self, stream: TextIO | None = None, callback: ProgressCallback | None = None):
        super().__init__(callback)
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def emit(self, event: dict) -> None:
        super().emit(event)
        with self._lock:
            self.stream.write(json.dumps(event, default=str) + "\n")
            self.stream.flush()


class TqdmProgress(Progress):
    """A tqdm bar per stage on stderr; info events are logged as plain lines."""

    def __init__(self, callback: ProgressCallback | None = None, stream: TextIO | None = None):
        super().__init__(callback)
        self.stream = stream or sys.stderr
        self._bar: Any = None  # the stage's tqdm bar (tqdm is imported on first use)
        self._stage: str | None = None

    def update(self, stage: str, done: int, total: int, **extra: Any) -> None:
        from tqdm.auto import tqdm

        if stage != self._stage or self._bar is None or self._bar.total != total:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=stage, file=self.stream, leave=False, dynamic_ncols=True)
        self._bar.n = done
        if extra:
            self._bar.set_postfix({k: v for k, v in extra.items() if isinstance(v, (int, float, str))}, refresh=False)
        self._bar.refresh()
        super().update(stage, done, total, **extra)

    def info(self, **fields: Any) -> None:
        message = fields.get("message")
        if message:
            if self._bar is not None:
                self._bar.write(str(message), file=self.stream)
            else:
                print(message, file=self.stream, flush=True)
        super().info(**fields)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Throttle:
    """Limits how often a frequent event is emitted (the last one of a stage always passes)."""

    def __init__(self, progress: Progress, min_interval_s: float = 0.2):
        self.progress = progress
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def update(self, stage: str, done: int, total: int, **extra: Any) -> None:
        now = time.monotonic()
        if done >= total or now - self._last >= self.min_interval_s:
            self._last = now
            self.progress.update(stage, done, total, **extra)


def make_progress(kind: str | None, callback: ProgressCallback | None = None) -> Progress:
    """``kind``: ``"json"``, ``"tqdm"``, ``"none"`` or ``None`` (callback only)."""
    if kind == "json":
        return JsonProgress(callback=callback)
    if kind == "tqdm":
        return TqdmProgress(callback=callback)
    return Progress(callback)
