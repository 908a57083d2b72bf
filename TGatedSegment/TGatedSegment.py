"""TGatedSegment: type organ names, get a 3D segmentation of the loaded CT or MR volume.

The model runs in a separate process (``PythonSlicer -m TGatedSegmentLib segment ...``, the same
command users run in a shell), so Slicer stays responsive, Cancel stops it at once (the launcher and
the interpreter it starts: the whole process tree), and a crash of the model cannot take Slicer down.
This file is the Slicer-specific part only; every decision that can be made without Slicer lives in
``TGatedSegmentGlue`` and is tested outside Slicer.

No torch or transformers import here, at module load or in the widget's setup: Slicer's generic
module tests load the module without them, and the first-use check offers to install them.
"""

import logging
import os
import shutil
import sys
import tempfile
import time

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _makeBackendImportable():
    """Put the extension's own TGatedSegmentLib first on ``sys.path``: a built extension ships it next
    to this file, a source checkout (module path ``<repo>/TGatedSegment`` added in Application
    Settings) one folder up. A copy pip-installed into Slicer's Python then cannot shadow it
    silently (the module logs which copy it runs, see ``glue.backendReport``)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for parent in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(parent, "TGatedSegmentLib", "__init__.py")):
            if parent in sys.path:
                sys.path.remove(parent)
            sys.path.insert(0, parent)
            return


def _installedBackend():
    """(version, package folder) of a tgated-segment installed as a regular package, else None
    (an editable install points back at a checkout and is not a second copy)."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution
    except ImportError:
        return None
    try:
        dist = distribution("tgated-segment")
    except PackageNotFoundError:
        return None
    folder = str(dist.locate_file("TGatedSegmentLib"))
    return (dist.version, folder) if os.path.isfile(os.path.join(folder, "__init__.py")) else None


_makeBackendImportable()

import TGatedSegmentGlue as glue  # noqa: E402
import TGatedSegmentLib  # noqa: E402
from TGatedSegmentGlue import processtree  # noqa: E402

BACKEND_SHADOWED, BACKEND_REPORT = glue.backendReport(os.path.dirname(TGatedSegmentLib.__file__),
                                                      TGatedSegmentLib.__version__, _installedBackend())
(logging.warning if BACKEND_SHADOWED else logging.info)(BACKEND_REPORT)

#
# TGatedSegment
#


class TGatedSegment(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TGated Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["TGatedSegment developers"]
        self.parent.helpText = _("""
Type organ names (for example "liver, pancreas, left kidney") and get one segment per name for the
selected CT or MR volume. The model (CLIPSeg with the T-Gated temporal adapter) runs in a separate
process; the panel stays responsive and Apply turns into Cancel while it runs.
More: docs/slicer.md in the extension's source.
""")
        self.parent.acknowledgementText = _("""
Built on CLIPSeg (Lüddecke and Ecker, CVPR 2022) and the T-Gated temporal adapter for volumetric
text-prompted segmentation. Organ terminology follows Slicer's General Anatomy list (SNOMED CT).
""")


#
# TGatedSegmentLogic
#


def startBackend(process):
    """Start a :class:`TGatedSegmentGlue.BackendProcess`, with a plain-words error if it cannot start."""
    logging.info("TGatedSegment: running %s", " ".join(process.args))
    try:
        process.start()
    except OSError as exc:
        raise glue.BackendError(_("Could not start the backend ({error})").format(error=exc),
                                _("Check that 3D Slicer's PythonSlicer is installed next to Slicer."),
                                " ".join(process.args), "StartFailed") from None
    return process


class BackendJob:
    """One run of the backend in a separate process: started by the logic, polled by a ``qt.QTimer``
    (``wait=False``) or by :meth:`wait`, stopped by :meth:`cancel`.

    ``state`` is "running", then "done" (``result`` set), "failed" (``error`` set, a
    :class:`TGatedSegmentGlue.BackendError` in plain words with details) or "cancelled". Between
    :meth:`cancel` and "cancelled" it is "cancelling" for as long as some process of the backend's
    tree is still running (at most ``cancelGraceS`` plus a poll): the GUI thread never waits for it,
    the job's timer (or :meth:`wait`) finishes the job once the tree is gone.
    ``completedCallback(job)`` is called once, whatever the outcome; ``progressCallback(event)``
    gets each backend event with ``percent`` (0-100) and ``text`` added.
    """

    what = "The backend"
    stages = None
    # Seconds from Cancel (SIGTERM to the whole tree) to SIGKILL. Segmentation only writes to its
    # temporary folder, so a short grace is enough: no process of the run outlives Cancel by much more.
    cancelGraceS = 1.5
    # What cancel() itself may wait on the GUI thread for the tree to end (the usual case: it stops
    # at once on SIGTERM, and the job ends within the call).
    cancelWaitS = 0.25
    logIntervalS = 5.0

    def __init__(self, logic, args, progressCallback=None, completedCallback=None):
        self.logic = logic
        self.args = list(args)
        self.progressCallback = progressCallback
        self.completedCallback = completedCallback
        self.tracker = glue.ProgressTracker(self.stages)
        self.state = "new"
        self.result = None
        self.error = None
        self.device = None
        self.process = None
        self._timer = None
        self._polling = False
        self._cancelRequested = False
        self._lastStage = None
        self._lastLogTime = 0.0

    @property
    def running(self):
        """Started and not ended: "running", or "cancelling" while the backend's processes stop."""
        return self.state in ("running", "cancelling")

    def start(self, wait):
        self.process = glue.BackendProcess(self.args, env=self.logic.backendEnvironment(),
                                           cwd=self.logic.backendLibraryParent(), launcher=self.logic.launchProcess,
                                           onEvent=self._onEvent, onLog=self._onLog)
        startBackend(self.process)
        self.state = "running"
        if not wait:
            self._timer = qt.QTimer()
            self._timer.setInterval(self.logic.pollIntervalMs)
            self._timer.connect("timeout()", self.poll)
            self._timer.start()
        return self

    def report(self, event):
        """Pass an event (from the backend or the logic's own stages) to the callback or the log."""
        event = self.tracker.update(event)
        if self.progressCallback:
            self.progressCallback(event)
        elif event["text"]:
            # Console use: a line per stage and at most one every few seconds within a stage.
            now = time.monotonic()
            if event["event"] != "progress" or event.get("stage") != self._lastStage \
                    or event.get("done") == event.get("total") or now - self._lastLogTime >= self.logIntervalS:
                self._lastStage, self._lastLogTime = event.get("stage"), now
                logging.info("TGatedSegment: %s (%d%%)", event["text"], event["percent"])

    def _onEvent(self, event):
        if self.state != "running":  # after Cancel, what the backend still prints changes nothing
            return
        if event.get("device") and event["event"] in ("info", "done"):
            self.device = event["device"]
        if event["event"] in ("progress", "info", "done"):
            self.report(event)

    def _onLog(self, line):
        logging.info("TGatedSegment backend: %s", line)

    def poll(self):
        """Handle what the backend printed; True once the job has finished (any outcome)."""
        if not self.running or self._polling:
            return not self.running
        self._polling = True
        try:
            ended = self.process.poll()
        finally:
            self._polling = False
        if self._cancelRequested and self.state == "running":
            self.cancel()
        elif ended:
            self._finish()
        return not self.running

    def cancel(self, kill=False):
        """Stop the backend and every process it started, and leave the scene as it was.

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
        if self.process.cancel(0.0 if kill else self.cancelGraceS, self.cancelWaitS):
            self._finish()

    def wait(self):
        """Block (keeping Slicer's window painted) until the job ends; returns the result or raises."""
        while not self.poll():
            slicer.app.processEvents()
            time.sleep(0.02)
        if self.state == "failed":
            raise self.error
        if self.state == "cancelled":
            raise glue.Cancelled(_("Cancelled; nothing was changed."))
        return self.result

    def onSuccess(self, doneEvent):
        return doneEvent

    def cleanup(self):
        pass

    def _finish(self):
        try:
            if self.process.cancelled or self._cancelRequested:
                self.state = "cancelled"
            elif self.process.returncode == 0 and self.process.doneEvent is not None:
                self.result = self.onSuccess(self.process.doneEvent)
                self.state = "done"
            else:
                raise glue.errorFromBackend(self.process.lastError, self.process.returncode, list(self.process.output),
                                            self.args, self.what)
        except Exception as exc:
            self.state = "failed"
            self.error = exc
            logging.error("TGatedSegment: %s", exc)
            if getattr(exc, "details", ""):
                logging.info("TGatedSegment details:\n%s", exc.details)
        finally:
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            self.cleanup()
            self.logic.jobEnded(self)
            if self.completedCallback:
                self.completedCallback(self)


class SegmentationJob(BackendJob):
    """``segment``: export the volume, run the backend, import each prompt's mask as a segment."""

    what = "Segmentation"
    stages = glue.SEGMENT_STAGES

    def __init__(self, logic, args, tempDir, outputPath, geometry, volumeNode, outputSegmentationNode,
                 replaceExisting, showIn3D, progressCallback=None, completedCallback=None, uncertaintyDir=None):
        super().__init__(logic, args, progressCallback, completedCallback)
        self.tempDir = tempDir
        self.uncertaintyDir = uncertaintyDir
        self.uncertaintyVolume = None  # the entropy map's volume node, when asked for
        self.outputPath = outputPath
        self.geometry = geometry
        self.volumeNode = volumeNode
        self.outputSegmentationNode = outputSegmentationNode
        self.replaceExisting = replaceExisting
        self.showIn3D = showIn3D
        self.segments = []  # the done event's per-prompt summary (name, prompt, voxels, volume_ml)

    def onSuccess(self, doneEvent):
        self.segments = doneEvent.get("segments") or []
        segmentationNode = self.logic.importResult(self, doneEvent)
        if self.uncertaintyDir:
            self.uncertaintyVolume = self.logic.importUncertainty(self, doneEvent.get("uncertainty") or {})
        return segmentationNode

    def cleanup(self):
        shutil.rmtree(self.tempDir, ignore_errors=True)


class TrainingJob(BackendJob):
    """``train``: the backend's training in a separate process; ``result`` is the best checkpoint folder."""

    what = "Training"
    # SIGTERM makes the trainer stop after the current step and save it (checkpoints are written
    # atomically): it gets that long before the tree is killed. The GUI does not wait for it.
    cancelGraceS = 30.0

    def __init__(self, logic, args, outputFolder, progressCallback=None, completedCallback=None):
        super().__init__(logic, args, progressCallback, completedCallback)
        self.outputFolder = outputFolder
        self.checkpointFolder = os.path.join(outputFolder, "best")

    def onSuccess(self, doneEvent):
        folder = doneEvent.get("best") or self.checkpointFolder
        if not os.path.isdir(folder):
            raise glue.BackendError(
                _("Training finished but wrote no checkpoint folder '{folder}'").format(folder=folder),
                _("See the Python console for the trainer's output."))
        return folder


class TGatedSegmentLogic(ScriptedLoadableModuleLogic):
    """Segmentation and training for the panel and for the Python console (no widget needed):

    >>> logic = slicer.util.getModuleLogic("TGatedSegment")  # or TGatedSegment.TGatedSegmentLogic()
    >>> seg = logic.segment(volumeNode, "liver, left kidney")
    >>> best = logic.train("/data/FLARE22", "/runs/flare", epochs=5, wait=True)
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        # Command that starts the backend; None: [PythonSlicer, "-m", "TGatedSegmentLib"].
        # Scripts and tests may point it elsewhere (another Python, a stand-in script).
        self.backendCommand = None
        self.pollIntervalMs = 100
        self.segmentationJob = None
        self.trainingJob = None

    # ---------------------------------------------------------------------------------------------
    # Backend process

    def backendPrefix(self):
        if self.backendCommand:
            return list(self.backendCommand)
        pythonSlicer = shutil.which("PythonSlicer")
        if not pythonSlicer:
            raise glue.BackendError(_("Cannot find PythonSlicer, Slicer's Python interpreter"),
                                    _("Reinstall 3D Slicer, or set logic.backendCommand to a Python that has the "
                                      "TGatedSegment requirements."))
        return [pythonSlicer, "-m", glue.BACKEND_PACKAGE]

    @staticmethod
    def backendLibraryParent():
        """The folder that holds the TGatedSegmentLib package (build tree, install, or source checkout)."""
        return os.path.dirname(os.path.dirname(os.path.abspath(TGatedSegmentLib.__file__)))

    def backendEnvironment(self):
        startupPythonPath = slicer.util.startupEnvironment().get("PYTHONPATH")
        return glue.backendEnvironment(self.backendLibraryParent(), startupPythonPath)

    @staticmethod
    def launchProcess(args, env, cwd):
        """Start the backend from Slicer's startup environment (plus ``env``) as
        ``slicer.util.launchConsoleProcess`` does (hidden console window on Windows, output and errors
        on one pipe), but as the root of a process group of its own: PythonSlicer is a launcher whose
        child is the real interpreter, and only a signal to the whole group stops both.
        launchConsoleProcess cannot start a new group, hence ``processtree``."""
        environment = slicer.util.startupEnvironment()
        environment.update(env or {})
        return processtree.startProcessTree(args, environment, cwd)

    def runBackendCommand(self, args):
        """Run ``python -m TGatedSegmentLib <args>`` and wait; returns its output lines.

        For short commands such as ``["init", "--base-config", "builtin:tiny", "--tokenizer", "compact",
        "--output", folder]`` (an untrained checkpoint, made offline).
        """
        command = self.backendPrefix() + [str(a) for a in args]
        process = glue.BackendProcess(command, env=self.backendEnvironment(), cwd=self.backendLibraryParent(),
                                      launcher=self.launchProcess,
                                      onLog=lambda line: logging.info("TGatedSegment backend: %s", line))
        startBackend(process)
        process.wait(idle=slicer.app.processEvents)
        if process.returncode != 0:
            raise glue.errorFromBackend(process.lastError, process.returncode, list(process.output), command,
                                        _("The backend command"))
        return list(process.output)

    def requirements(self):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
        return glue.readRequirements(path)

    def missingDependencies(self):
        """Requirements not installed in Slicer's Python (checked without importing anything)."""
        return glue.missingRequirements(self.requirements())

    def _checkDependencies(self):
        missing = self.missingDependencies()
        if missing:
            raise glue.BackendError(
                _("TGatedSegment needs these Python packages, which are not installed: {names}").format(
                    names=", ".join(glue.requirementName(r) for r in missing)),
                _("Open the TGatedSegment module and press Apply: it offers to install them (PyTorch through the "
                  "PyTorch extension)."), kind="MissingDependency")

    def jobEnded(self, job):
        if self.segmentationJob is job:
            self.segmentationJob = None
        if self.trainingJob is job:
            self.trainingJob = None

    # ---------------------------------------------------------------------------------------------
    # Segmentation

    def segment(self, volumeNode, prompts, checkpoint=None, outputSegmentationNode=None, device="auto",
                modality="auto", threshold=None, batchSize=None, replaceExisting=False, showIn3D=False,
                uncertainty=0, progressCallback=None, completedCallback=None, wait=True):
        """Segment the organs named by ``prompts`` in ``volumeNode``; one segment per prompt.

        :param prompts: text ("liver, left kidney", comma or newline separated) or a list of names.
        :param checkpoint: checkpoint folder or hub id; None: the zero-shot CLIPSeg base model.
        :param outputSegmentationNode: segmentation to add to; None: a new one named after the volume,
          placed next to the volume in the data tree. Existing segments are never removed; a segment with
          the same name is replaced only with ``replaceExisting``, otherwise the new one is added as
          "name (2)".
        :param device: "auto" (CUDA when available), "cpu" or "cuda".
        :param modality: "auto" (the volume's DICOM modality if known, else guessed), "ct" or "mr".
        :param threshold: probability threshold; None: the checkpoint's.
        :param batchSize: slices per batch; None: the backend's default.
        :param showIn3D: also build the 3D surfaces.
        :param uncertainty: N >= 2: also compute an uncertainty map from N stochastic passes of the temporal
          adapter per slice (the image is still encoded once); it is added as a scalar volume ("<volume>
          uncertainty", entropy in nats, 0 = certain) overlaid on the slice views, and returned as
          ``job.uncertaintyVolume``. Needs a T-Gated checkpoint.
        :param progressCallback: called with each event dict (keys ``event``, ``stage``, ``done``,
          ``total``, ... plus ``percent`` and ``text``); None: progress goes to the log.
        :param completedCallback: called with the :class:`SegmentationJob` when it ends (any outcome).
        :param wait: True: block and return the segmentation node (raises
          :class:`TGatedSegmentGlue.BackendError`, or :class:`TGatedSegmentGlue.Cancelled` when a
          callback cancelled it). False: return the running :class:`SegmentationJob` at once; its
          ``result`` is the segmentation node when ``state == "done"``.
        """
        if self.segmentationJob is not None:
            if self.segmentationJob.state == "cancelling":
                raise RuntimeError(_("The cancelled segmentation is still stopping; try again in a moment."))
            raise RuntimeError(_("A segmentation is already running; cancel it first."))
        prompts = glue.parsePrompts(prompts)
        if not prompts:
            raise ValueError(_("Type at least one organ name, for example: liver, left kidney."))
        arrayKJI, ijkToRAS = self._volumeData(volumeNode)
        if outputSegmentationNode is not None:
            self._checkSegmentationNode(outputSegmentationNode)
        self._checkDependencies()
        if (modality or "auto").lower() == "auto":
            modality = glue.modalityFromDicom(self._dicomModality(volumeNode)) or "auto"

        tempDir = tempfile.mkdtemp(prefix="TGatedSegment-", dir=slicer.app.temporaryPath)
        try:
            inputPath = os.path.join(tempDir, "input.nrrd")
            outputPath = os.path.join(tempDir, "result.seg.nrrd")
            uncertaintyDir = os.path.join(tempDir, "uncertainty") if uncertainty else None
            args = self.backendPrefix() + glue.segmentArguments(inputPath, outputPath, prompts, checkpoint, device,
                                                                modality, threshold, batchSize, uncertainty,
                                                                uncertaintyDir)
            geometry = glue.exportVolume(arrayKJI, ijkToRAS, inputPath)
            job = SegmentationJob(self, args, tempDir, outputPath, geometry, volumeNode, outputSegmentationNode,
                                  replaceExisting, showIn3D, progressCallback, completedCallback, uncertaintyDir)
            job.report({"event": "progress", "stage": "export", "done": 1, "total": 1})
            job.start(wait)
        except BaseException:
            shutil.rmtree(tempDir, ignore_errors=True)
            raise
        self.segmentationJob = job
        return job.wait() if wait else job

    def cancel(self, kill=False):
        """Stop the running segmentation, if any; the scene is left as it was. Returns at once; the
        job ends when the backend's processes are gone (``kill=True``: no grace period)."""
        if self.segmentationJob is not None:
            self.segmentationJob.cancel(kill)

    @staticmethod
    def _volumeData(volumeNode):
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError(_("Select a scalar volume (CT or MR) to segment."))
        imageData = volumeNode.GetImageData()
        if imageData is None or imageData.GetNumberOfScalarComponents() != 1:
            raise ValueError(_("The volume '{name}' has no single-component image data.").format(
                name=volumeNode.GetName()))
        ijkToRAS = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRAS)
        return slicer.util.arrayFromVolume(volumeNode), slicer.util.arrayFromVTKMatrix(ijkToRAS)

    @staticmethod
    def _checkSegmentationNode(segmentationNode):
        segmentation = segmentationNode.GetSegmentation()
        binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        if segmentation.GetNumberOfSegments() and segmentation.GetSourceRepresentationName() != binary:
            raise ValueError(_("The segmentation '{name}' is stored as {representation}; choose another one or "
                               "create a new segmentation.").format(
                name=segmentationNode.GetName(), representation=segmentation.GetSourceRepresentationName()))

    @staticmethod
    def _dicomModality(volumeNode):
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        item = shNode.GetItemByDataNode(volumeNode)
        return shNode.GetItemAttribute(item, "DICOM.Modality") if item else ""

    def terminologyLookup(self, label):
        """Slicer's General Anatomy terminology entry for a 3dSlicerLabel: (serialized entry, RGB) or None."""
        try:
            terminologies = slicer.modules.terminologies.logic()
        except AttributeError:  # Terminologies module not loaded (e.g. --disable-modules)
            return None
        entry = slicer.vtkSlicerTerminologyEntry()
        if not terminologies.FindTypeInTerminologyBy3dSlicerLabel(glue.TERMINOLOGY_CONTEXT, label, entry):
            return None
        modifier = entry.GetTypeModifierObject()
        coded = modifier if modifier is not None and modifier.GetCodeValue() else entry.GetTypeObject()
        rgb = tuple(int(c) for c in coded.GetRecommendedDisplayRGBValue()) if coded is not None else None
        return terminologies.SerializeTerminologyEntry(entry), rgb

    def importResult(self, job, doneEvent):
        """Add each prompt's mask of the finished ``job`` as a named, coded segment.

        Non-overlapping segments share one labelmap layer, as the backend's ``.seg.nrrd`` already
        packs them (one byte per voxel for 13 organs instead of 13); prompts that overlap (an organ
        and a lesion in it) keep separate layers. Each layer goes in through Slicer's own labelmap
        import and its numpy copy is let go before the next one, so the scene and the import add
        at most about the volume's own size in memory.
        """
        import numpy as np

        from TGatedSegmentLib.io.writers import PROMPT_TAG

        result = glue.readResult(job.outputPath, job.geometry)
        volumeNode = job.volumeNode
        segmentationNode = job.outputSegmentationNode
        for node in (volumeNode, segmentationNode):
            if node is not None and node.GetScene() is None:
                raise glue.BackendError(_("'{name}' was removed from the scene while segmenting; nothing was "
                                          "imported").format(name=node.GetName()), _("Run the segmentation again."),
                                        kind="NodeRemoved")
        names = [name for name, _, _ in result.segments]
        prompts = {row.get("name"): row.get("prompt") for row in doneEvent.get("segments") or []}
        created = segmentationNode is None
        existingNames = []
        if not created:
            segmentation = segmentationNode.GetSegmentation()
            existingNames = [segmentation.GetSegment(segmentation.GetNthSegmentID(i)).GetName()
                             for i in range(segmentation.GetNumberOfSegments())]
        # Decide everything before the scene changes.
        plan = glue.planSegmentNames(names, existingNames, job.replaceExisting)
        looks = [glue.segmentAppearance(name, len(existingNames) + i, self.terminologyLookup)
                 for i, name in enumerate(names)]
        terminologyTag = slicer.vtkSegment.GetTerminologyEntryTagName()

        added = []
        replaced = {}  # segment id -> what it held before, restored if the import fails half-way
        try:
            if created:
                name = slicer.mrmlScene.GenerateUniqueName(glue.defaultSegmentationName(volumeNode.GetName()))
                segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
                segmentationNode.CreateDefaultDisplayNodes()
                # The masks are in the volume's own coordinates: share its parent transform. This must
                # come first: SetReferenceImageGeometryParameterFromVolumeNode maps the volume's geometry
                # through the transform between the volume and the segmentation *as it is then*
                # (vtkMRMLSegmentationNode.cxx), so a segmentation not yet under the volume's transform
                # would get the geometry moved by that transform, and be moved by it again once under it.
                segmentationNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
                segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            segmentation = segmentationNode.GetSegmentation()
            wasModified = segmentationNode.StartModify()
            try:
                segmentIds = {}
                # A replaced segment keeps its ID (and its place in the list): it gets its voxels alone.
                for index, (segmentName, replace) in enumerate(plan):
                    if replace:
                        segmentId = segmentation.GetSegmentIdBySegmentName(segmentName)
                        replaced[segmentId] = self._segmentBackup(segmentationNode, segmentId, volumeNode)
                        slicer.util.updateSegmentBinaryLabelmapFromArray(result.mask(index).astype(np.uint8),
                                                                         segmentationNode, segmentId, volumeNode)
                        segmentIds[index] = segmentId
                    else:  # created now, in prompt order; the voxels follow layer by layer
                        segmentIds[index] = segmentation.AddEmptySegment("", segmentName, looks[index].color)
                        added.append(segmentIds[index])
                newIds = {index: segmentIds[index] for index, (_, replace) in enumerate(plan) if not replace}
                self._importLayers(result, newIds, segmentationNode, volumeNode, job.report)
                for index, (segmentName, replace) in enumerate(plan):
                    segment = segmentation.GetSegment(segmentIds[index])
                    if not replace:  # a replaced segment keeps its name as the user wrote it
                        segment.SetName(segmentName)
                    look = looks[index]
                    segment.SetColor(*look.color)
                    segment.SetNameAutoGenerated(False)
                    segment.SetColorAutoGenerated(False)
                    if look.terminology:
                        segment.SetTag(terminologyTag, look.terminology)
                    segment.SetTag(PROMPT_TAG, prompts.get(names[index]) or names[index])
            finally:
                segmentationNode.EndModify(wasModified)
        except BaseException:
            if created:
                slicer.mrmlScene.RemoveNode(segmentationNode)
            else:
                for segmentId in added:
                    segmentation.RemoveSegment(segmentId)
                for segmentId, backup in replaced.items():
                    self._restoreSegment(segmentationNode, segmentId, volumeNode, backup)
            raise
        job.report({"event": "progress", "stage": "import", "done": len(plan), "total": len(plan)})

        if created:
            shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
            volumeItem = shNode.GetItemByDataNode(volumeNode)
            if volumeItem:
                shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), shNode.GetItemParent(volumeItem))
        if job.showIn3D:
            segmentationNode.CreateClosedSurfaceRepresentation()
        return segmentationNode

    @staticmethod
    def _importLayers(result, segmentIds, segmentationNode, volumeNode, report):
        """The voxels of ``result``'s segments {index: segment ID}, one layer at a time, through Slicer's
        labelmap import with a list of segment IDs (label value v goes to the v-th ID): the segments of
        a layer then share one image, with their label values.

        The temporary labelmap node gets the volume's grid and parent transform, so Slicer neither
        resamples nor moves it; each layer's numpy copy is dropped once it is in that node. (Not
        ``CreateAndAddLabelVolume``, which ``updateSegmentBinaryLabelmapFromArray`` uses: it first
        allocates a zero image of the volume's size that the layer then replaces.)
        """
        import numpy as np

        layerIndices = sorted({result.segments[i][1] for i in segmentIds})
        for done, layerIndex in enumerate(layerIndices):
            report({"event": "progress", "stage": "import", "done": done, "total": len(layerIndices)})
            inLayer = [(label, i) for i, (_name, where, label) in enumerate(result.segments) if where == layerIndex]
            byLabel = {label: segmentIds[i] for label, i in inLayer if i in segmentIds}
            layer = result.layers[layerIndex]
            others = [label for label, i in inLayer if i not in segmentIds]
            if others:  # the layer also holds segments that replaced existing ones (imported alone): not here
                layer = np.where(np.isin(layer, others), 0, layer).astype(np.uint8)
            result.layers[layerIndex] = None  # its only copy is now the one going into the scene
            ids = vtk.vtkStringArray()
            for label in range(1, max(label for label, _index in inLayer) + 1):
                ids.InsertNextValue(byLabel.get(label, ""))
            labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__temp__")
            try:
                ijkToRAS = vtk.vtkMatrix4x4()
                volumeNode.GetIJKToRASMatrix(ijkToRAS)
                labelmapNode.SetIJKToRASMatrix(ijkToRAS)
                labelmapNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
                slicer.util.updateVolumeFromArray(labelmapNode, layer)
                del layer
                if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmapNode,
                                                                                            segmentationNode, ids):
                    raise RuntimeError("Slicer could not import the result's labelmap")
            finally:
                slicer.mrmlScene.RemoveNode(labelmapNode)

    @staticmethod
    def _segmentBackup(segmentationNode, segmentId, volumeNode):
        import numpy as np

        from TGatedSegmentLib.io.writers import PROMPT_TAG

        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        tags = {}
        for tag in (slicer.vtkSegment.GetTerminologyEntryTagName(), PROMPT_TAG):
            value = vtk.mutable("")
            if segment.GetTag(tag, value):
                tags[tag] = str(value)
        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        return {"voxels": None if voxels is None else np.array(voxels, copy=True), "color": segment.GetColor(),
                "tags": tags, "flags": (segment.GetNameAutoGenerated(), segment.GetColorAutoGenerated())}

    @staticmethod
    def _restoreSegment(segmentationNode, segmentId, volumeNode, backup):
        from TGatedSegmentLib.io.writers import PROMPT_TAG

        if backup["voxels"] is not None:
            slicer.util.updateSegmentBinaryLabelmapFromArray(backup["voxels"], segmentationNode, segmentId, volumeNode)
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        segment.SetColor(*backup["color"])
        segment.SetNameAutoGenerated(backup["flags"][0])
        segment.SetColorAutoGenerated(backup["flags"][1])
        for tag in (slicer.vtkSegment.GetTerminologyEntryTagName(), PROMPT_TAG):
            if tag in backup["tags"]:
                segment.SetTag(tag, backup["tags"][tag])
            else:
                segment.RemoveTag(tag)

    def importUncertainty(self, job, info):
        """Add the combined entropy map as a scalar volume beside the volume, overlaid on the slice views."""
        volumeNode = job.volumeNode
        array = glue.readUncertainty(job.uncertaintyDir, job.geometry)
        ijkToRAS = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRAS)
        name = slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} uncertainty")
        node = slicer.util.addVolumeFromArray(array, ijkToRAS, name, "vtkMRMLScalarVolumeNode")
        node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
        node.SetAttribute("TGatedSegment.Uncertainty", info.get("method") or "")
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(glue.UNCERTAINTY_COLORS)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, glue.UNCERTAINTY_MAX)
        display.SetLowerThreshold(glue.UNCERTAINTY_SHOWN_FROM)  # certain voxels stay see-through
        display.SetApplyThreshold(1)
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        if volumeItem:
            shNode.SetItemParent(shNode.GetItemByDataNode(node), shNode.GetItemParent(volumeItem))
        slicer.util.setSliceViewerLayers(background=volumeNode, foreground=node, foregroundOpacity=0.5)
        return node

    # ---------------------------------------------------------------------------------------------
    # Training

    def train(self, datasetFolder, outputFolder, wait=False, progressCallback=None, completedCallback=None, **options):
        """Train (fine-tune) a model with the backend's ``train`` command, in a separate process.

        :param datasetFolder: nnU-Net v2 / Decathlon style folder (imagesTr/, labelsTr/, dataset.json).
        :param outputFolder: run folder; the best checkpoint is written to ``<outputFolder>/best``.
        :param options: the trainer's options as keywords: val, base, tokenizer, epochs, steps,
          batchSize, noTemporal, freezeEncoders, resume (True: continue the run in outputFolder),
          device, seed (snake_case spellings work too).
        :param wait: False (default): return at once, training goes on in the background (progress in
          the Python console or to ``progressCallback``; stop it with :meth:`stopTraining`). True: block
          until it ends and raise if it failed.
        :return: the checkpoint folder (``<outputFolder>/best``), usable as ``checkpoint=`` for segment().
        """
        if self.trainingJob is not None:
            if self.trainingJob.state == "cancelling":
                raise RuntimeError(_("The stopped training run is still saving its last step; try again in a moment."))
            raise RuntimeError(_("A training run is already going on; stop it first with stopTraining()."))
        self._checkDependencies()
        outputFolder = os.path.abspath(os.path.expanduser(str(outputFolder)))
        args = self.backendPrefix() + glue.trainArguments(os.path.abspath(os.path.expanduser(str(datasetFolder))),
                                                          outputFolder, **options)
        job = TrainingJob(self, args, outputFolder, progressCallback, completedCallback)
        job.start(wait)
        self.trainingJob = job
        if wait:
            return job.wait()
        return job.checkpointFolder

    def stopTraining(self):
        """Stop the training run started with ``wait=False``; its last saved checkpoints stay. Returns
        at once: the trainer saves its current step and stops, and is killed if it still runs after
        ``TrainingJob.cancelGraceS``."""
        if self.trainingJob is not None:
            self.trainingJob.cancel()


#
# TGatedSegmentWidget
#


class TGatedSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wiring only, every decision is in the logic or TGatedSegmentGlue."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TGatedSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TGatedSegmentLogic()

        for text, data in ((_("Auto (GPU if available)"), "auto"), (_("CPU"), "cpu"), (_("GPU (CUDA)"), "cuda")):
            self.ui.deviceComboBox.addItem(text, data)
        for text, data in ((_("Auto"), "auto"), (_("CT"), "ct"), (_("MR"), "mr")):
            self.ui.modalityComboBox.addItem(text, data)
        self.ui.progressBar.setVisible(False)
        self._restoreSettings()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateApplyButton)
        self.ui.promptsTextEdit.connect("textChanged()", self.updateApplyButton)
        self.ui.presetButton.connect("clicked()", self.onPresetButton)
        self.ui.recentPromptsComboBox.connect("activated(int)", self.onRecentPrompts)
        self.ui.modelLineEdit.connect("textChanged(QString)", self.updateModelNote)
        self.ui.modelBrowseButton.connect("clicked()", self.onModelBrowse)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.updateModelNote()
        self.updateApplyButton()

    def cleanup(self):
        """Slicer is closing (or the module is reloaded): stop what this panel's logic started. The
        segmentation is killed at once (no event loop may be left to kill it after its grace); the
        training gets SIGTERM, on which the trainer saves its step and stops by itself."""
        if self.logic:
            self.logic.cancel(kill=True)
            self.logic.stopTraining()
        self.removeObservers()

    def enter(self):
        if not self.ui.inputVolumeSelector.currentNode():
            self.ui.inputVolumeSelector.setCurrentNode(slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode"))
        self.updateApplyButton()

    def onSceneStartClose(self, caller, event):
        if self.logic:
            self.logic.cancel()

    # --- settings --------------------------------------------------------------------------------

    def _settingsKey(self, name):
        return f"{glue.SETTINGS_GROUP}/{name}"

    def _restoreSettings(self):
        settings = qt.QSettings()
        toBool = slicer.util.toBool
        self.promptHistory = glue.decodeHistory(settings.value(self._settingsKey("RecentPrompts"), ""))
        self._fillRecentPrompts()
        if self.promptHistory:
            self.ui.promptsTextEdit.setPlainText(glue.promptsText(glue.parsePrompts(self.promptHistory[0])))
        self.ui.modelLineEdit.text = settings.value(self._settingsKey("Model"), "")
        self.ui.replaceCheckBox.checked = toBool(settings.value(self._settingsKey("ReplaceSameName"), False))
        self.ui.show3DCheckBox.checked = toBool(settings.value(self._settingsKey("ShowIn3D"), True))
        device = settings.value(self._settingsKey("Device"), "auto")
        self.ui.deviceComboBox.setCurrentIndex(max(self.ui.deviceComboBox.findData(device), 0))

    def _saveSettings(self, prompts):
        settings = qt.QSettings()
        self.promptHistory = glue.rememberPrompts(self.promptHistory, prompts)
        settings.setValue(self._settingsKey("RecentPrompts"), glue.encodeHistory(self.promptHistory))
        settings.setValue(self._settingsKey("Model"), self.ui.modelLineEdit.text.strip())
        settings.setValue(self._settingsKey("ReplaceSameName"), self.ui.replaceCheckBox.checked)
        settings.setValue(self._settingsKey("ShowIn3D"), self.ui.show3DCheckBox.checked)
        settings.setValue(self._settingsKey("Device"), self._comboData(self.ui.deviceComboBox))
        self._fillRecentPrompts()

    def _fillRecentPrompts(self):
        combo = self.ui.recentPromptsComboBox
        combo.clear()
        combo.addItem(_("Recent prompts..."))
        for entry in self.promptHistory:
            combo.addItem(entry)
        combo.enabled = bool(self.promptHistory)

    @staticmethod
    def _comboData(combo):
        return combo.itemData(combo.currentIndex)

    # --- inputs ----------------------------------------------------------------------------------

    def onPresetButton(self):
        self.ui.promptsTextEdit.setPlainText(glue.ABDOMEN13_PROMPTS)

    def onRecentPrompts(self, index):
        if index > 0:
            self.ui.promptsTextEdit.setPlainText(glue.promptsText(glue.parsePrompts(self.promptHistory[index - 1])))
        self.ui.recentPromptsComboBox.setCurrentIndex(0)

    def updateModelNote(self, text=None):
        self.ui.modelNoteLabel.text = glue.modelNote(self.ui.modelLineEdit.text)

    def onModelBrowse(self):
        start = self.ui.modelLineEdit.text.strip()
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(),
                                                     _("Checkpoint folder (with config.json)"),
                                                     start if os.path.isdir(start) else "")
        if folder:
            self.ui.modelLineEdit.text = folder

    def updateApplyButton(self, *args):
        if self.job is not None and self.job.state == "cancelling":
            self.ui.applyButton.enabled = False
            self.ui.applyButton.text = _("Stopping...")
            self.ui.applyButton.toolTip = _("Waiting for the backend's processes to end.")
            return
        if self.job is not None:
            self.ui.applyButton.enabled = True
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the segmentation; nothing is added to the scene.")
            return
        self.ui.applyButton.text = _("Apply")
        hasVolume = self.ui.inputVolumeSelector.currentNode() is not None
        hasPrompts = bool(glue.parsePrompts(self.ui.promptsTextEdit.toPlainText()))
        self.ui.applyButton.enabled = hasVolume and hasPrompts
        if not hasVolume:
            self.ui.applyButton.toolTip = _("Select a volume to segment.")
        elif not hasPrompts:
            self.ui.applyButton.toolTip = _("Type organ names, for example: liver, left kidney.")
        else:
            self.ui.applyButton.toolTip = _("Segment the named organs.")

    # --- run -------------------------------------------------------------------------------------

    def onApplyButton(self, checked=False):
        if self.job is not None:
            self.log(_("Cancelling..."))
            self.logic.cancel()  # returns at once; onCompleted follows when the processes are gone
            self.updateApplyButton()
            return
        prompts = glue.parsePrompts(self.ui.promptsTextEdit.toPlainText())
        if not self.ensureDependencies():
            return
        self._saveSettings(prompts)
        threshold = self.ui.thresholdSpinBox.value
        self.ui.statusLog.clear()
        self.ui.deviceUsedLabel.text = "-"
        self.ui.progressBar.value = 0
        self.ui.progressBar.setFormat(_("Starting..."))
        self.ui.progressBar.setVisible(True)
        try:
            self.job = self.logic.segment(
                self.ui.inputVolumeSelector.currentNode(), prompts,
                checkpoint=self.ui.modelLineEdit.text.strip() or None,
                outputSegmentationNode=self.ui.outputSegmentationSelector.currentNode(),
                device=self._comboData(self.ui.deviceComboBox),
                modality=self._comboData(self.ui.modalityComboBox),
                threshold=threshold if threshold > 0 else None,
                batchSize=self.ui.batchSizeSpinBox.value,
                replaceExisting=self.ui.replaceCheckBox.checked,
                showIn3D=self.ui.show3DCheckBox.checked,
                uncertainty=self.ui.uncertaintySamplesSpinBox.value if self.ui.uncertaintyCheckBox.checked else 0,
                progressCallback=self.onProgress, completedCallback=self.onCompleted, wait=False)
        except Exception as exc:
            self.ui.progressBar.setVisible(False)
            self.showError(exc)
            return
        self.log(_("Segmenting {count} prompt(s): {prompts}").format(count=len(prompts), prompts=", ".join(prompts)))
        self.updateApplyButton()

    def onProgress(self, event):
        self.ui.progressBar.value = event["percent"]
        self.ui.progressBar.setFormat(f"{event['text']}  %p%" if event["text"] else "%p%")
        if event["event"] == "info":
            self.ui.deviceUsedLabel.text = event.get("device") or "-"
            self.log(event["text"])

    def onCompleted(self, job):
        self.job = None
        self.ui.progressBar.setVisible(False)
        if job.device:
            self.ui.deviceUsedLabel.text = job.device
        if job.state == "done":
            segmentationNode = job.result
            self.ui.outputSegmentationSelector.setCurrentNode(segmentationNode)
            for row in job.segments:
                empty = "" if row.get("voxels") else _("  (nothing found)")
                self.log(f"{row.get('name')}: {row.get('volume_ml', 0):.1f} ml{empty}")
            self.log(_("Done on {device}: {count} segment(s) in '{name}'.").format(
                device=job.device or "?", count=len(job.segments), name=segmentationNode.GetName()))
            if job.uncertaintyVolume is not None:
                self.log(_("Uncertainty map: '{name}' (bright = unsure), overlaid on the slice views.").format(
                    name=job.uncertaintyVolume.GetName()))
        elif job.state == "cancelled":
            self.log(_("Cancelled; nothing was changed."))
        else:
            self.log(str(job.error))
            self.showError(job.error)
        self.updateApplyButton()

    def log(self, text):
        self.ui.statusLog.appendPlainText(text)

    def showError(self, exc):
        message = getattr(exc, "message", None) or str(exc)
        hint = getattr(exc, "hint", None)
        text = f"{message.rstrip('.')}.\n\n{hint}" if hint else message
        slicer.util.errorDisplay(text, windowTitle=_("TGatedSegment"), detailedText=getattr(exc, "details", "") or "")

    # --- first use: dependencies -----------------------------------------------------------------

    def ensureDependencies(self):
        """Offer to install what the backend needs; True when everything is there."""
        missing = self.logic.missingDependencies()
        if not missing:
            return True
        names = [glue.requirementName(r) for r in missing]
        bundled = [n for n in names if n.lower() in ("numpy", "simpleitk")]
        if bundled:
            slicer.util.errorDisplay(_("Slicer's own {names} is missing or too old; reinstall 3D Slicer.").format(
                names=", ".join(bundled)))
            return False
        torch = [r for r in missing if glue.requirementName(r).lower() == "torch"]
        others = [r for r in missing if glue.requirementName(r).lower() != "torch"]
        if not slicer.util.confirmOkCancelDisplay(
                _("TGatedSegment needs these Python packages: {names}.\n\nInstall them now? This downloads about "
                  "2 GB the first time and may take several minutes.").format(names=", ".join(names)),
                windowTitle=_("TGatedSegment: install dependencies")):
            self.log(_("Not installed: {names}.").format(names=", ".join(names)))
            return False
        try:
            with slicer.util.WaitCursor():
                if torch:
                    self._installTorch(torch[0])
                if others:
                    self._pipInstall(others)
        except Exception as exc:
            self.showError(glue.BackendError(_("Installing the Python packages failed: {error}").format(error=exc),
                                             _("Check the network connection, restart Slicer and try again.")))
            return False
        still = self.logic.missingDependencies()
        if still:
            self.showError(glue.BackendError(_("Still missing after the installation: {names}").format(
                names=", ".join(still)), _("Restart Slicer and try again.")))
            return False
        return True

    @staticmethod
    def _installTorch(requirement):
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(_("the PyTorch extension is not installed: install 'PyTorch' from the Extensions "
                                 "Manager and restart Slicer")) from None
        versionRequirement = requirement[len(glue.requirementName(requirement)):].strip() or None
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                               torchVersionRequirement=versionRequirement)
        if torch is None:
            raise RuntimeError(_("PyTorch was not installed"))

    @staticmethod
    def _pipInstall(requirements):
        try:
            import slicer.packaging as packaging  # Slicer 5.12+: checks, installs, offers a restart if needed
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(requirements, prompt_install=False, requester="TGatedSegment")
        else:  # Slicer 5.10: blocking install, output in the Python console
            slicer.util.pip_install(requirements)


#
# TGatedSegmentTest
#


class TGatedSegmentTest(ScriptedLoadableModuleTest):
    """Self-test. In Slicer's Python console: ``slicer.selfTests['TGatedSegment']()`` (the module's
    ``runTest``, registered there by ``ScriptedLoadableModule.__init__``); Reload and Test in developer
    mode; the ctest ``py_TGatedSegment`` of a build; or from a shell, exiting with a failure status if
    the test fails (``--testing`` implies ``--disable-settings``, hence the module path)::

        Slicer --no-splash --no-main-window --testing --additional-module-paths <repo>/TGatedSegment \\
            --python-code "slicer.selfTests['TGatedSegment']()"

    Inference runs only when torch and transformers are installed (a tiny untrained checkpoint, made
    offline, so no download)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_Instantiation()
        self.setUp()
        self.test_Helpers()
        self.setUp()
        self.test_SegmentTwoPromptsIfTorchInstalled()

    def test_Instantiation(self):
        logic = TGatedSegmentLogic()
        self.assertIsNone(logic.segmentationJob)
        self.assertIsNone(logic.trainingJob)
        self.assertTrue(os.path.isfile(os.path.join(logic.backendLibraryParent(), "TGatedSegmentLib", "__main__.py")))
        self.assertTrue(any(glue.requirementName(r) == "torch" for r in logic.requirements()))
        logic.cancel()  # nothing running: a no-op
        self.delayDisplay("Instantiation test passed")

    def test_Helpers(self):
        self.assertEqual(glue.parsePrompts("liver, left kidney\npancreas,, liver"),
                         ["liver", "left kidney", "pancreas"])
        liver = glue.segmentAppearance("liver", 0)
        self.assertIn("SCT^10200004^Liver", liver.terminology)
        self.assertEqual(glue.planSegmentNames(["liver"], ["Liver"], replace=False), [("liver (2)", False)])
        self.assertEqual(glue.planSegmentNames(["liver"], ["Liver"], replace=True), [("liver", True)])
        args = glue.segmentArguments("in.nrrd", "out.seg.nrrd", ["liver"], device="cpu")
        self.assertEqual(args[args.index("--progress") + 1], "json")
        heart = TGatedSegmentLogic().terminologyLookup("heart")
        if heart is not None:  # Terminologies module loaded
            self.assertIn("SCT^80891009^Heart", heart[0])
        self.delayDisplay("Helper test passed")

    def test_SegmentTwoPromptsIfTorchInstalled(self):
        import importlib.util

        import numpy as np

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
            logging.warning("TGatedSegment self-test: torch or transformers is not installed; inference test skipped.")
            self.delayDisplay("Inference test skipped (no torch/transformers)")
            return
        logic = TGatedSegmentLogic()
        workDir = tempfile.mkdtemp(prefix="TGatedSegmentTest-", dir=slicer.app.temporaryPath)
        try:
            checkpoint = os.path.join(workDir, "tiny")
            logic.runBackendCommand(["init", "--base-config", "builtin:tiny", "--tokenizer", "compact",
                                     "--output", checkpoint])

            # A sagittally stored, obliquely rotated volume: slices along R-L, rows along S-I.
            rng = np.random.default_rng(0)
            voxels = (rng.normal(0, 200, (16, 20, 24)) + 40).astype(np.int16)  # (k, j, i)
            angle = np.deg2rad(15)
            rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
            axes = rotation @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # columns: I, J, K in RAS
            ijkToRAS = np.eye(4)
            ijkToRAS[:3, :3] = axes * np.array([1.5, 1.2, 3.0])
            ijkToRAS[:3, 3] = [10.0, -20.0, 30.0]
            volumeNode = slicer.util.addVolumeFromArray(voxels, ijkToRAS, "TGatedSegmentTest volume")

            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "existing")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            existingId = segmentationNode.GetSegmentation().AddEmptySegment("", "liver", (0.1, 0.2, 0.3))
            existingMask = np.zeros(voxels.shape, np.uint8)
            existingMask[4:8, 5:10, 6:12] = 1
            slicer.util.updateSegmentBinaryLabelmapFromArray(existingMask, segmentationNode, existingId, volumeNode)

            def ourTemporaryFolders():
                return {n for n in os.listdir(slicer.app.temporaryPath) if n.startswith("TGatedSegment-")}

            tempBefore = ourTemporaryFolders()
            events = []
            result = logic.segment(volumeNode, "liver, left kidney", checkpoint=checkpoint,
                                   outputSegmentationNode=segmentationNode, device="cpu",
                                   progressCallback=events.append)
            self.assertIs(result, segmentationNode)
            self.assertIsNone(logic.segmentationJob)
            self.assertEqual(ourTemporaryFolders(), tempBefore)  # the run's temporary files are removed
            done = [e for e in events if e["event"] == "done"][-1]
            self.assertEqual(done["device"], "cpu")
            self.assertEqual(events[-1]["percent"], 100)

            # The pre-existing segment is untouched; the new "liver" is added beside it.
            segmentation = segmentationNode.GetSegmentation()
            self.assertEqual(segmentation.GetNumberOfSegments(), 3)
            existing = segmentation.GetSegment(existingId)
            self.assertEqual(existing.GetName(), "liver")
            self.assertEqual(tuple(round(c, 3) for c in existing.GetColor()), (0.1, 0.2, 0.3))
            np.testing.assert_array_equal(
                slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, existingId, volumeNode), existingMask)

            terminologyTag = slicer.vtkSegment.GetTerminologyEntryTagName()
            binary = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
            expected = {"liver (2)": ("liver", "SCT^10200004^Liver~^^"),
                        "left kidney": ("left kidney", "SCT^64033007^Kidney~SCT^7771000^Left")}
            for name, (prompt, code) in expected.items():
                segmentId = segmentation.GetSegmentIdBySegmentName(name)
                self.assertTrue(segmentId, f"no segment '{name}'")
                segment = segmentation.GetSegment(segmentId)
                tag = vtk.reference("")
                self.assertTrue(segment.GetTag(terminologyTag, tag))
                self.assertIn(code, str(tag))
                # Geometry: the segment lies on the volume's voxel grid, voxel for voxel what the backend found
                # (an empty segment has an empty image of its own, without geometry).
                voxelCount = next(row["voxels"] for row in done["segments"] if row["name"] == prompt)
                if voxelCount:
                    imageToWorld = vtk.vtkMatrix4x4()
                    segment.GetRepresentation(binary).GetImageToWorldMatrix(imageToWorld)
                    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(imageToWorld), ijkToRAS, atol=1e-6)
                mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
                self.assertEqual(mask.shape, voxels.shape)
                self.assertEqual(int(mask.sum()), voxelCount)
        finally:
            shutil.rmtree(workDir, ignore_errors=True)
        self.delayDisplay("Segmentation test passed")
