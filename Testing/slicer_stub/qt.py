"""Stand-in for the part of PythonQt's ``qt`` module that the TGatedSegment logic uses: ``QTimer``.

PythonQt lets Python connect a signal by its C++ signature, ``timer.connect("timeout()", fn)``; the
timer fires from the Qt event loop, which here is :func:`processEvents` (called by the stand-in's
``slicer.app.processEvents()``). Anything else from ``qt`` is deliberately absent, so that a logic
change that starts needing more of Qt fails loudly in the tests instead of passing against a fake.
"""

from __future__ import annotations

import time

_activeTimers: list["QTimer"] = []


class QTimer:
    def __init__(self, parent=None):
        self._interval = 0
        self._slots = []
        self._active = False
        self._due = 0.0

    def setInterval(self, msec: int) -> None:
        self._interval = int(msec)

    def interval(self) -> int:
        return self._interval

    def connect(self, signal: str, slot) -> bool:
        if signal != "timeout()":
            raise ValueError(f"QTimer has no signal {signal!r} in the stand-in")
        self._slots.append(slot)
        return True

    def start(self, msec: int | None = None) -> None:
        if msec is not None:
            self._interval = int(msec)
        self._active = True
        self._due = time.monotonic() + self._interval / 1000.0
        if self not in _activeTimers:
            _activeTimers.append(self)

    def stop(self) -> None:
        self._active = False
        if self in _activeTimers:
            _activeTimers.remove(self)


def processEvents() -> None:
    """Fire the timers that are due, as Qt's event loop would."""
    now = time.monotonic()
    for timer in list(_activeTimers):
        if timer._active and now >= timer._due:
            timer._due = now + timer._interval / 1000.0
            for slot in list(timer._slots):
                slot()


def activeTimerCount() -> int:
    """For tests: timers still running (a finished job must have stopped its timer)."""
    return len(_activeTimers)
