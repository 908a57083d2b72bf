"""Client of the warm backend (``python -m TGatedSegmentLib serve``): one long-lived process per
(checkpoint, device, precision), reused across segmentations, so that the model loads once and a
new prompt on the same volume costs only the decoder (the backend keeps that volume's encoder tokens).

>>> backend = WarmBackend([sys.executable, "-m", "TGatedSegmentLib"], env=backendEnvironment(libraryParent))
>>> job = backend.segment("ct.nrrd", "liver.seg.nrrd", ["liver"], checkpoint="ckpt", onEvent=print)
>>> job.wait()                      # or job.poll() from a qt.QTimer: True once it has ended
>>> job.doneEvent["outputs"]        # job.error: a BackendError when it failed; job.cancelled
>>> backend.stop()                  # also done at interpreter exit

- started on first use; started again when the checkpoint, device or precision changes, or when the
  process has died;
- :meth:`WarmJob.cancel` asks the backend to stop the request (it stays up, warm, for the next
  one); if it has not stopped after ``grace`` seconds the whole process tree is killed
  (:mod:`processtree`, as for a one-shot run) and the next request starts a new process;
- everything is driven from the caller's thread by :meth:`WarmJob.poll` (a reader thread only
  queues output lines), so the Slicer GUI never blocks; events are the backend's ``--progress json``
  events (:func:`parseEventLine`, :class:`ProgressTracker` read them), each with the request's ``id``.

Standard library and the glue only: the pytest suite runs it against real backend processes.
In Slicer, ``TGatedSegmentLogic`` passes a ``launcher`` that starts from Slicer's startup environment
(``launchProcess(..., stdin=True)``) and drives it through :class:`WarmSegmentationJob`, which has
the one-shot :class:`~.jobs.SegmentationJob`'s interface.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import subprocess
import threading
import time
import weakref
from collections import deque
from typing import Callable, Sequence

from .errors import BackendError, errorFromBackend
from .events import parseEventLine
from .i18n import tr as _
from .jobs import SegmentationJob
from .processtree import ProcessTree, startProcessTree

# Requests that end a job, by event name.
_FINAL = ("done", "error", "cancelled")


def startWithInput(args: Sequence[str], env: dict | None = None, cwd: str | None = None) -> subprocess.Popen:
    """:func:`processtree.startProcessTree` with a pipe to standard input (the backend reads its
    requests there), in this process's environment plus ``env``."""
    return startProcessTree(args, {**os.environ, **(env or {})}, cwd, stdin=True)


class WarmJob:
    """One request to the warm backend, driven by :meth:`poll` (True once it has ended)."""

    def __init__(self, backend: "WarmBackend", requestId: str, onEvent: Callable[[dict], None] | None):
        self.backend, self.id, self.onEvent = backend, requestId, onEvent
        self.doneEvent: dict | None = None
        self.error: BackendError | None = None
        self.cancelled = False
        self.finished = False
        self.pending: dict | None = None  # the request, until the backend says it is ready
        self._cancelAt: float | None = None

    def _finish(self, event: dict | None) -> None:
        self.finished = True
        kind = (event or {}).get("event")
        if kind == "done":
            self.doneEvent = event
        elif kind == "cancelled" or self._cancelAt is not None:
            self.cancelled = True
        else:
            self.error = errorFromBackend(
                event, self.backend.returncode, list(self.backend.output), self.backend.command
            )

    def poll(self) -> bool:
        if not self.finished:
            self.backend._pump()
            if not self.finished and self._cancelAt is not None and time.monotonic() >= self._cancelAt:
                self.backend.kill()  # it did not stop in time: end the whole tree
                self.backend._pump()
        return self.finished

    def wait(self, idle: Callable[[], None] | None = None, interval: float = 0.02) -> "WarmJob":
        while not self.poll():
            if idle:
                idle()
            time.sleep(interval)
        return self

    def cancel(self, grace: float = 10.0) -> None:
        """Ask the backend to stop this request; kill the process tree if it has not within ``grace`` s."""
        if self.finished or self._cancelAt is not None:
            return
        if self.pending is not None:  # never sent: nothing to stop, the backend goes on loading for the next
            self.pending, self.cancelled, self.finished = None, True, True
            return
        self._cancelAt = time.monotonic() + max(grace, 0.0)
        self.backend._send({"op": "cancel", "id": self.id})


class WarmBackend:
    """Starts, reuses, restarts and stops the ``serve`` process (see the module docstring)."""

    def __init__(
        self,
        command: Sequence[str],
        env: dict | None = None,
        cwd: str | None = None,
        launcher: Callable | None = None,
        keepLines: int = 200,
        startTimeout: float = 600.0,
    ):
        self.prefix = [str(c) for c in command]  # e.g. [PythonSlicer, "-m", "TGatedSegmentLib"]
        self.env, self.cwd = env, cwd
        self.launcher = launcher or startWithInput
        self.startTimeout = startTimeout
        self.output: deque[str] = deque(maxlen=keepLines)
        self.process: subprocess.Popen | None = None
        self.tree: ProcessTree | None = None
        self.settings: tuple | None = None  # (checkpoint, device, precision) of the running process
        self.command: list[str] = []
        self.ready: dict | None = None
        self.returncode: int | None = None
        self.current: WarmJob | None = None
        self._lines: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._lastEvent: dict | None = None
        atexit.register(_stopAtExit, weakref.ref(self))

    # -- process ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    def start(self, checkpoint=None, device: str = "auto", precision: str | None = None) -> None:
        """Make sure a backend for these settings runs (reused if it already does, else (re)started)."""
        settings = (str(checkpoint) if checkpoint else None, device or "auto", precision or "auto")
        if self.running and settings == self.settings:
            return
        self.stop()
        self.command = self.prefix + ["serve", "--device", settings[1], "--precision", settings[2]]
        if settings[0]:
            self.command += ["--checkpoint", settings[0]]
        self.output.clear()
        self.ready, self.returncode, self.settings, self._lastEvent = None, None, settings, None
        self._lines = queue.Queue()
        self.process = self.launcher(self.command, self.env, self.cwd)
        self.tree = ProcessTree(self.process)
        threading.Thread(
            target=_readLines,
            args=(self.process.stdout, self._lines),
            daemon=True,
            name="TGatedSegment warm backend output",
        ).start()

    def _waitReady(self, idle: Callable[[], None] | None) -> None:
        end = time.monotonic() + self.startTimeout
        while self.ready is None:
            self._pump()
            if self.ready is not None:
                break
            if not self.running and self._lines.empty():
                self._pump()
                raise errorFromBackend(
                    self._lastEvent, self.returncode, list(self.output), self.command, "Starting the backend"
                )
            if time.monotonic() > end:
                self.kill()
                raise BackendError(
                    _("The backend did not start in time"), _("See the details."), "\n".join(self.output), "Timeout"
                )
            if idle:
                idle()
            time.sleep(0.02)

    def stop(self, grace: float = 5.0) -> None:
        """Ask the process to exit, and end its whole tree if it has not within ``grace`` s."""
        if self.process is None:
            return
        if self.running:
            self._send({"op": "shutdown"})
            end = time.monotonic() + grace
            while self.running and time.monotonic() < end:
                time.sleep(0.02)
        if self.tree is not None and not self.tree.stopped():
            self.tree.stop(0)
            self.tree.waitStopped(grace)
        self._pump()
        self.process = None

    def kill(self) -> None:
        if self.tree is not None:
            self.tree.stop(0)
            self.tree.waitStopped(2.0)

    # -- requests ----------------------------------------------------------------------------------
    def segment(
        self,
        inputPath,
        outputPath,
        prompts: Sequence[str] | str,
        checkpoint=None,
        device: str = "auto",
        precision: str | None = None,
        modality: str = "auto",
        threshold: float | None = None,
        onEvent: Callable[[dict], None] | None = None,
        idle: Callable[[], None] | None = None,
        wait: bool = True,
    ) -> WarmJob:
        """Send a segmentation request (starting the right backend first); returns its :class:`WarmJob`.

        ``wait``: wait (calling ``idle``) while a backend starts (the model loads once per process);
        False: return at once, the request goes out when the backend is ready (:meth:`WarmJob.poll`
        drives it), so a GUI thread never waits for a model to load.
        """
        if self.current is not None and not self.current.finished:
            raise RuntimeError(_("A segmentation is already running; cancel it first."))
        self.start(checkpoint, device, precision)
        if wait:
            self._waitReady(idle)
        job = WarmJob(self, f"r{next(self._ids)}", onEvent)
        self.current = job
        job.pending = {
            "op": "segment",
            "id": job.id,
            "input": str(inputPath),
            "output": str(outputPath),
            "prompts": list(prompts) if not isinstance(prompts, str) else prompts,
            "modality": modality,
            "threshold": threshold,
            "overwrite": True,
        }
        self._sendPending()
        return job

    def _sendPending(self) -> None:
        job = self.current
        if self.ready is not None and job is not None and job.pending is not None and not job.finished:
            request, job.pending = job.pending, None
            self._send(request)

    def _send(self, request: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError, AttributeError):  # gone: _pump reports it
            pass

    def _pump(self) -> None:
        """Handle the output lines that arrived; end the current job if the process has died."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            event = parseEventLine(line)
            if event is None:
                self.output.append(line)
                continue
            self._lastEvent = event
            if event["event"] == "ready":
                self.ready = event
                self._sendPending()
            job = self.current
            if job is None or job.finished or event.get("id") not in (job.id, None) or event["event"] == "ready":
                continue
            if job.onEvent:
                job.onEvent(event)
            if event["event"] in _FINAL:
                job._finish(event)
        if self.process is not None and self.process.poll() is not None:
            self.returncode = self.process.returncode
            if self.current is not None and not self.current.finished and self._lines.empty():
                self.current._finish(self._lastEvent if (self._lastEvent or {}).get("event") == "error" else None)


class WarmSegmentationJob(SegmentationJob):
    """A segmentation answered by a :class:`WarmBackend` instead of a process of its own, with the
    interface of :class:`~.jobs.SegmentationJob` (state, poll, cancel, one ending, the result imported
    by ``importer``, ``tempDir`` removed whatever happens).

    Cancel asks the backend to stop the request and ends its whole process tree if it has not stopped
    within ``cancelGraceS`` (``kill``: at once), so the work stops within 2 s either way; a backend
    that stopped in time stays warm for the next request. ``cached`` says whether the backend reused
    the volume's encoder tokens (a new prompt on the volume it segmented last).
    """

    def __init__(
        self,
        backend: WarmBackend,
        inputPath: str,
        prompts,
        tempDir: str,
        outputPath: str,
        geometry,
        request,
        importer: Callable,
        checkpoint=None,
        device: str = "auto",
        precision: str | None = None,
        modality: str = "auto",
        threshold: float | None = None,
        progressCallback=None,
        completedCallback=None,
    ):
        super().__init__(
            list(backend.prefix) + ["serve"],
            tempDir,
            outputPath,
            geometry,
            request,
            importer,
            progressCallback=progressCallback,
            completedCallback=completedCallback,
        )
        self.backend = backend
        self.inputPath, self.prompts = inputPath, prompts
        self.options = dict(
            checkpoint=checkpoint, device=device, precision=precision, modality=modality, threshold=threshold
        )
        self.warmJob: WarmJob | None = None
        self.cached = False

    def _startBackend(self) -> None:
        self.warmJob = self.backend.segment(
            self.inputPath, self.outputPath, self.prompts, onEvent=self._onEvent, wait=False, **self.options
        )
        self.args = list(self.backend.command)  # the process that answers, for messages

    def _pollBackend(self) -> bool:
        return self.warmJob.poll()

    def _stopBackend(self, kill: bool) -> bool:
        self.warmJob.cancel(0.0 if kill else self.cancelGraceS)
        return self.warmJob.poll()

    def _conclude(self) -> None:
        job = self.warmJob
        if job.cancelled or self._cancelRequested:
            self.state = "cancelled"
        elif job.doneEvent is not None:
            self.cached = bool(job.doneEvent.get("cached"))
            self.result = self.onSuccess(job.doneEvent)
            self.state = "done"
        else:
            raise job.error or BackendError(
                _("The backend stopped without an answer"),
                _("See the details."),
                "\n".join(self.backend.output),
                "NoAnswer",
            )


def _readLines(stream, lines: queue.Queue) -> None:
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError:
            continue
        except (OSError, ValueError):
            break
        if not line:
            break
        lines.put(line.rstrip("\r\n"))
    lines.put(None)


def _stopAtExit(ref) -> None:
    backend = ref()
    if backend is not None:
        backend.stop(grace=2.0)
