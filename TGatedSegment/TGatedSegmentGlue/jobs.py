"""A backend run as a job: started, polled, cancelled, ended once with a result or a plain-words error.

The job knows nothing about Slicer or the logic that starts it. The logic hands it what it needs:
the command line, the environment, a launcher, and for a segmentation the function that imports
the result into the scene (``importer``); it polls the job from a ``qt.QTimer`` (``endedCallbacks``
stop the timer and let the logic forget the job) or blocks in :meth:`BackendJob.wait` with Slicer's
event processing as ``idle``. So calls go one way, logic -> job.

``state`` is "new", "running", then "done" (``result`` set), "failed" (``error`` set: a
:class:`~.errors.BackendError` with details) or "cancelled". Between :meth:`~BackendJob.cancel` and
"cancelled" it is "cancelling" for as long as a process of the backend's tree still runs: the GUI
thread never waits for it. ``completedCallback(job)`` is called once, whatever the outcome;
``progressCallback(event)`` gets each backend event with ``percent`` (0-100) and ``text`` added.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Callable, Sequence

from .errors import BackendError, Cancelled, errorFromBackend
from .events import SEGMENT_STAGES, ProgressTracker
from .i18n import tr as _
from .process import BackendProcess

log = logging.getLogger("TGatedSegment")


class BackendJob:
    stages: dict | None = None
    # Seconds from Cancel (SIGTERM to the whole tree) to SIGKILL.
    cancelGraceS = 1.5
    # What cancel() itself may wait on the GUI thread for the tree to end (the usual case: it stops
    # at once on SIGTERM, and the job ends within the call).
    cancelWaitS = 0.25
    logIntervalS = 5.0

    def __init__(
        self,
        args: Sequence[str],
        env: dict | None = None,
        cwd: str | None = None,
        launcher: Callable | None = None,
        progressCallback=None,
        completedCallback=None,
    ):
        self.args = [str(a) for a in args]
        self.env, self.cwd, self.launcher = env, cwd, launcher
        self.progressCallback = progressCallback
        self.completedCallback = completedCallback
        self.endedCallbacks: list[
            Callable
        ] = []  # the owner's: called with the job when it ends, before completedCallback
        self.tracker = ProgressTracker(self.stages)
        self.state = "new"
        self.result = None
        self.error = None
        self.device = None
        self.process: BackendProcess | None = None
        self._polling = False
        self._cancelRequested = False
        self._lastStage = None
        self._lastLogTime = 0.0

    def what(self) -> str:
        """The run's name in messages."""
        return _("The backend command")

    @property
    def running(self) -> bool:
        """Started and not ended: "running", or "cancelling" while the backend's processes stop."""
        return self.state in ("running", "cancelling")

    def start(self) -> "BackendJob":
        log.info("TGatedSegment: running %s", " ".join(self.args))
        try:
            self._startBackend()
        except OSError as exc:
            raise BackendError(
                _("Could not start the backend ({error})").format(error=exc),
                _("Check that 3D Slicer's PythonSlicer is installed next to Slicer."),
                " ".join(self.args),
                "StartFailed",
            ) from None
        self.state = "running"
        return self

    def report(self, event: dict) -> None:
        """Pass an event (from the backend or the logic's own stages) to the callback or the log."""
        event = self.tracker.update(event)
        if self.progressCallback:
            self.progressCallback(event)
        elif event["text"]:
            # Console use: a line per stage and at most one every few seconds within a stage.
            now = time.monotonic()
            if (
                event["event"] != "progress"
                or event.get("stage") != self._lastStage
                or event.get("done") == event.get("total")
                or now - self._lastLogTime >= self.logIntervalS
            ):
                self._lastStage, self._lastLogTime = event.get("stage"), now
                log.info("TGatedSegment: %s (%d%%)", event["text"], event["percent"])

    def _onEvent(self, event: dict) -> None:
        if self.state != "running":  # after Cancel, what the backend still prints changes nothing
            return
        if event.get("device") and event["event"] in ("info", "done"):
            self.device = event["device"]
        if event["event"] in ("progress", "info", "done"):
            self.report(event)

    def _onLog(self, line: str) -> None:
        log.info("TGatedSegment backend: %s", line)

    def poll(self) -> bool:
        """Handle what the backend printed; True once the job has finished (any outcome)."""
        if not self.running or self._polling:
            return not self.running
        self._polling = True
        try:
            ended = self._pollBackend()
        finally:
            self._polling = False
        if self._cancelRequested and self.state == "running":
            self.cancel()
        elif ended:
            self._finish()
        return not self.running

    def cancel(self, kill: bool = False) -> None:
        """Stop the backend and every process it started; nothing reaches the scene.

        Returns at once (after at most ``cancelWaitS``): SIGTERM reaches the whole process tree now,
        SIGKILL follows after ``cancelGraceS`` (``kill=True``: now), and the job ends ("cancelled",
        ``completedCallback``, temporary files removed) as soon as no process of the tree is left.
        """
        if not self.running:
            return
        if self._polling:  # called from a progress callback: stop right after this poll
            self._cancelRequested = True
            return
        self._cancelRequested = True
        self.state = "cancelling"
        if self._stopBackend(kill):
            self._finish()

    # The backend behind the job; a job answered by another kind of backend overrides these four.
    def _startBackend(self) -> None:
        """Start the backend's work (OSError: it could not be started)."""
        self.process = BackendProcess(
            self.args, env=self.env, cwd=self.cwd, launcher=self.launcher, onEvent=self._onEvent, onLog=self._onLog
        )
        self.process.start()

    def _pollBackend(self) -> bool:
        """Read what the backend printed (events go to :meth:`_onEvent`); True once it has ended."""
        return self.process.poll()

    def _stopBackend(self, kill: bool) -> bool:
        """Cancel: stop the backend's work (``kill``: no grace); True if it has already ended."""
        return self.process.cancel(0.0 if kill else self.cancelGraceS, self.cancelWaitS)

    def _conclude(self) -> None:
        """Set the outcome once the backend has ended: ``state`` and ``result``, or raise the error."""
        if self.process.cancelled or self._cancelRequested:
            self.state = "cancelled"
        elif self.process.returncode == 0 and self.process.doneEvent is not None:
            self.result = self.onSuccess(self.process.doneEvent)
            self.state = "done"
        else:
            raise errorFromBackend(
                self.process.lastError, self.process.returncode, list(self.process.output), self.args, self.what()
            )

    def wait(self, idle: Callable[[], None] | None = None, interval: float = 0.02):
        """Block until the job ends (calling ``idle`` between polls, e.g. Slicer's processEvents);
        returns the result, or raises the error (:class:`~.errors.Cancelled` when cancelled)."""
        while not self.poll():
            if idle:
                idle()
            time.sleep(interval)
        if self.state == "failed":
            raise self.error
        if self.state == "cancelled":
            raise Cancelled(_("Cancelled; nothing was changed."))
        return self.result

    def onSuccess(self, doneEvent: dict):
        return doneEvent

    def cleanup(self) -> None:
        pass

    def _finish(self) -> None:
        try:
            self._conclude()
        except Exception as exc:
            self.state = "failed"
            self.error = exc
            log.error("TGatedSegment: %s", exc)
            if getattr(exc, "details", ""):
                log.info("TGatedSegment details:\n%s", exc.details)
        finally:
            self.cleanup()
            for callback in self.endedCallbacks:
                callback(self)
            if self.completedCallback:
                self.completedCallback(self)


class SegmentationJob(BackendJob):
    """``segment``: the volume was exported to ``tempDir``; on success ``importer(job, doneEvent)``
    puts the result into the scene and returns the segmentation node. ``tempDir`` is removed
    whatever happens."""

    stages = SEGMENT_STAGES

    def __init__(
        self,
        args,
        tempDir: str,
        outputPath: str,
        geometry,
        request,
        importer: Callable,
        uncertaintyDir: str | None = None,
        **kwargs,
    ):
        super().__init__(args, **kwargs)
        self.tempDir = tempDir
        self.outputPath = outputPath
        self.geometry = geometry  # of the exported (possibly cropped) volume: the result must lie on it
        self.request = request  # what the logic needs to import the result (nodes, options, crop)
        self.importer = importer
        self.uncertaintyDir = uncertaintyDir
        self.uncertaintyVolume = None  # the entropy map's volume node, when asked for
        self.segments: list[dict] = []  # the done event's per-prompt summary (name, prompt, voxels, volume_ml)

    def what(self) -> str:
        return _("Segmentation")

    def onSuccess(self, doneEvent):
        self.segments = doneEvent.get("segments") or []
        return self.importer(self, doneEvent)

    def cleanup(self):
        shutil.rmtree(self.tempDir, ignore_errors=True)


class TrainingJob(BackendJob):
    """``train``: the backend's training in a separate process; ``result`` is the best checkpoint folder."""

    # SIGTERM makes the trainer stop after the current step and save it (checkpoints are written
    # atomically): it gets that long before the tree is killed. The GUI does not wait for it.
    cancelGraceS = 30.0

    def __init__(self, args, outputFolder: str, **kwargs):
        super().__init__(args, **kwargs)
        self.outputFolder = outputFolder
        self.checkpointFolder = os.path.join(outputFolder, "best")

    def what(self) -> str:
        return _("Training")

    def onSuccess(self, doneEvent):
        folder = doneEvent.get("best") or self.checkpointFolder
        if not os.path.isdir(folder):
            raise BackendError(
                _("Training finished but wrote no checkpoint folder '{folder}'").format(folder=folder),
                _("See the Python console for the trainer's output."),
            )
        return folder


class DevicesJob(BackendJob):
    """``devices``: which devices the backend's PyTorch can use; ``result`` is a :class:`~.devices.DeviceReport`."""

    cancelGraceS = 0.5

    def what(self) -> str:
        return _("Detecting the devices")

    def onSuccess(self, doneEvent):
        from .devices import DeviceReport

        return DeviceReport.fromEvent(doneEvent)


class CommandJob(BackendJob):
    """Any other backend command that reports in JSON (``--json`` or ``--progress json``), such as
    ``models import``: ``result`` is its done event; ``what`` names it in messages ("The import")."""

    def __init__(self, args, what: str | None = None, **kwargs):
        super().__init__(args, **kwargs)
        self.description = what

    def what(self) -> str:
        return self.description or super().what()
