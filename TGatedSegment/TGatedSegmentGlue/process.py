"""One backend run in a separate process, read without ever blocking Slicer's GUI thread.

A reader thread only moves output lines into a queue; :meth:`BackendProcess.poll` (called by a
``qt.QTimer`` in Slicer) parses them on the caller's thread. :meth:`BackendProcess.cancel` stops the
process and every process it started (:mod:`.processtree`: PythonSlicer is a launcher whose child
is the real interpreter) and returns at once; :meth:`~BackendProcess.poll` reports the end.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections import deque
from typing import Callable, Sequence

from .events import parseEventLine
from .processtree import ProcessTree, startProcessTree


def popenLauncher(args: Sequence[str], env: dict | None, cwd: str | None) -> subprocess.Popen:
    """Stand-alone launcher (Slicer passes its own, which starts from Slicer's startup environment):
    output and errors on one text pipe, as Slicer's launcher does, and the root of a process group of
    its own so that :meth:`BackendProcess.cancel` reaches everything it starts."""
    environment = None
    if env:
        environment = dict(os.environ)
        environment.update(env)
    return startProcessTree(args, environment, cwd)


class BackendProcess:
    """One backend run in a separate process, driven by :meth:`poll` from the caller's thread.

    A reader thread only moves output lines into a queue; :meth:`poll` parses them, calls
    ``onEvent(event)`` for JSON events and ``onLog(line)`` for other lines on the caller's thread
    (in Slicer: the main thread, from a ``qt.QTimer``), and returns True once the process has ended
    and all its output was handled. :meth:`cancel` stops it and every process it started (SIGTERM to
    the process group, SIGKILL after a grace period; :mod:`processtree`) without blocking the caller:
    :meth:`poll` reports the end once no process of the tree is left.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict | None = None,
        cwd: str | None = None,
        launcher: Callable | None = None,
        onEvent: Callable[[dict], None] | None = None,
        onLog: Callable[[str], None] | None = None,
        keepLines: int = 200,
    ):
        self.args = [str(a) for a in args]
        self.env, self.cwd = env, cwd
        self.launcher = launcher or popenLauncher
        self.onEvent, self.onLog = onEvent, onLog
        self.output: deque[str] = deque(maxlen=keepLines)
        self.lastError: dict | None = None
        self.doneEvent: dict | None = None
        self.returncode: int | None = None
        self.cancelled = False
        self.process = None
        self.tree: ProcessTree | None = None
        self._queue: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._eof = False

    def start(self) -> "BackendProcess":
        self.process = self.launcher(self.args, self.env, self.cwd)
        self.tree = ProcessTree(self.process)
        self._reader = threading.Thread(target=self._read, name="TGatedSegment backend output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            try:
                line = stream.readline()
            except UnicodeDecodeError:  # a log line in another encoding: skip it, keep reading
                continue
            except (OSError, ValueError):  # pipe closed under us (cancel)
                break
            if not line:
                break
            self._queue.put(line.rstrip("\r\n"))
        self._queue.put(None)

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    @property
    def stopping(self) -> bool:
        """Cancelled, and some process of the tree is still running (:meth:`poll` finishes it)."""
        return self.cancelled and not self.finished

    def _drain(self) -> None:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._eof = True
                continue
            self._handle(line)

    def poll(self) -> bool:
        """Handle the output that arrived; True once the process has ended and everything was handled
        (after :meth:`cancel`: once no process of the tree is left, killing it when its grace is over)."""
        if self.finished:
            return True
        self._drain()
        if self.cancelled:
            if not self.tree.stopped():
                return False
            self._closeOutput()
            returncode = self.process.poll()
            self.returncode = returncode if returncode is not None else -9  # abandoned: reported as killed
            return True
        if self._eof and self.process.poll() is not None:
            self.returncode = self.process.returncode
            return True
        return False

    def _closeOutput(self) -> None:
        """The tree is gone, so the pipe is at its end: collect the last lines, then close it. A pipe
        still held open (by a process that left the group) is left to the daemon reader thread."""
        if self._reader is not None:
            self._reader.join(0.1)
        self._drain()
        if (self._reader is None or not self._reader.is_alive()) and self.process.stdout:
            self.process.stdout.close()

    def _handle(self, line: str) -> None:
        event = parseEventLine(line)
        if event is None:
            self.output.append(line)
            if self.onLog:
                self.onLog(line)
            return
        if event["event"] == "error":
            self.lastError = event
        elif event["event"] == "done":
            self.doneEvent = event
        if self.onEvent:
            self.onEvent(event)

    def wait(self, idle: Callable[[], None] | None = None, interval: float = 0.05) -> int:
        """Block until the process ends (calling ``idle`` between polls, e.g. to process GUI events)."""
        while not self.poll():
            if idle:
                idle()
            time.sleep(interval)
        return self.returncode

    def cancel(self, grace: float = 5.0, wait: float = 0.25) -> bool:
        """Stop the backend and every process it started: SIGTERM to the whole tree now (the backend
        stops cleanly and writes nothing), SIGKILL once ``grace`` seconds have passed (0: kill now);
        on Windows ``taskkill /T /F`` at once.

        Waits at most ``wait`` seconds, so that the GUI thread is never held up; True when the tree is
        gone by then, else :meth:`poll` (the caller's timer) reports the end later and kills on time.
        Calling it again shortens the grace period, never lengthens it.
        """
        if self.process is None or self.finished:
            return True
        self.cancelled = True
        self.tree.stop(grace)
        self.tree.waitStopped(wait)
        return self.poll()
