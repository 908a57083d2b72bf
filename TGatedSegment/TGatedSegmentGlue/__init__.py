"""Slicer-free part of the TGatedSegment module: every decision the panel and the logic make that does
not need Slicer, so that the pytest suite can check it without a running Slicer.

- prompts and presets for the panel, remembered prompt history, the one-line note on the model choice;
- the backend command lines (``python -m TGatedSegmentLib segment|train ...``) and their environment;
- :class:`BackendProcess`: runs the backend as a separate process, reads its JSON progress lines on a
  reader thread and hands them to the caller from ``poll()`` (called by a ``qt.QTimer`` in Slicer, so
  the application stays responsive), stops it and every process it started on request, without
  blocking (``processtree``: PythonSlicer is a launcher whose child is the real interpreter);
- progress text, and backend failures turned into plain-words errors with the details kept;
- segment names (the keep/replace rule), colours and terminology;
- the volume hand-over: a Slicer (k, j, i) array + IJK-to-RAS matrix written as a file with its
  geometry (the file stores LPS), and the result read back on exactly that grid.

Heavy or optional packages (SimpleITK, slicerio, torch) are imported inside the functions that need
them, never at import time: Slicer loads this file with the module, before any dependency check.
It is a package (a folder), not a file beside TGatedSegment.py, because Slicer loads every .py file
directly in a module folder as a module of its own.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from TGatedSegmentLib.errors import EXIT_CANCELLED  # noqa: F401  (re-exported for the module and tests)
from TGatedSegmentLib.model.configuration import DEFAULT_BASE_MODEL, FORMAT_NAME
from TGatedSegmentLib.vocabulary import (  # noqa: F401 (TERMINOLOGY_CONTEXT: for the module)
    ABDOMEN13,
    TERMINOLOGY_CONTEXT,
    generated_color,
    lookup,
    normalize,
    parse_prompts,
)

from .processtree import ProcessTree, startProcessTree

BACKEND_PACKAGE = "TGatedSegmentLib"
SETTINGS_GROUP = "TGatedSegment"
PROMPT_HISTORY_LIMIT = 10

# The 13 FLARE22 organs, one per line, for the panel's preset button.
ABDOMEN13_PROMPTS = "\n".join(organ.prompt for organ in ABDOMEN13)

# Import name of each requirement whose distribution name differs from it (other than "-" for "_").
IMPORT_NAMES = {"pillow": "PIL", "simpleitk": "SimpleITK"}


# --------------------------------------------------------------------------------------------------
# Prompts, model choice, names


def parsePrompts(text: str | Sequence[str] | None) -> list[str]:
    """Prompts from the panel's text box: comma, semicolon or newline separated, blanks and repeats
    dropped (the backend's own rule, so that one prompt is one segment)."""
    return parse_prompts(text)


def promptsText(prompts: Sequence[str]) -> str:
    """Prompts as the text box shows them: one per line."""
    return "\n".join(prompts)


def rememberPrompts(history: Sequence[str], prompts: Sequence[str], limit: int = PROMPT_HISTORY_LIMIT) -> list[str]:
    """The recent-prompts list with ``prompts`` (joined by ", ") moved to the front, without repeats."""
    entry = ", ".join(prompts)
    if not entry:
        return list(history)[:limit]
    return ([entry] + [h for h in history if normalize(h) != normalize(entry)])[:limit]


def decodeHistory(value) -> list[str]:
    """The recent-prompts list stored in the settings as JSON text (anything unreadable: empty)."""
    try:
        items = json.loads(value) if isinstance(value, str) and value else []
    except ValueError:
        return []
    return [str(item) for item in items if isinstance(item, str) and item.strip()] if isinstance(items, list) else []


def encodeHistory(history: Sequence[str]) -> str:
    return json.dumps(list(history))


def defaultSegmentationName(volumeName: str) -> str:
    return f"{volumeName} segmentation"


def looksLikeHubId(text: str) -> bool:
    """``owner/name`` that is not a path: the backend's rule (``model.checkpoint._looks_like_hub_id``),
    restated here because importing that module loads torch."""
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def modelNote(text: str | None) -> str:
    """One line under the model picker saying what the current choice means."""
    text = (text or "").strip()
    if not text:
        return (f"Zero-shot: the general CLIPSeg model {DEFAULT_BASE_MODEL} (downloaded once, about 600 MB); "
                "no organ training, expect rough results.")
    path = Path(text).expanduser()
    if path.is_dir():
        config = path / "config.json"
        try:
            raw = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"'{path.name}' has no readable config.json: not a checkpoint folder."
        if raw.get("format") == FORMAT_NAME:
            kind = "T-Gated (reads 5 neighbouring slices)" if raw.get("adapter") else "slice-wise baseline"
            trained = "trained" if raw.get("training") else "untrained (random adapter: for tests only)"
            return f"Checkpoint folder: {kind}, {trained}."
        if raw.get("model_type") == "clipseg":
            return "A plain CLIPSeg model folder: zero-shot, no organ training."
        return f"'{path.name}' is not a TGatedSegment checkpoint folder."
    if path.exists():
        return "A single file: choose the checkpoint folder that holds config.json."
    if looksLikeHubId(text):
        return f"Hugging Face Hub model '{text}': downloaded once into the local cache, then used offline."
    return "Not found: give a checkpoint folder or a hub id (owner/name); leave empty for zero-shot."


def uniqueName(name: str, taken) -> str:
    """``name`` if free, else ``name (2)``, ``name (3)``, ...; ``taken`` holds lower-case names."""
    if name.lower() not in taken:
        return name
    n = 2
    while f"{name} ({n})".lower() in taken:
        n += 1
    return f"{name} ({n})"


def planSegmentNames(names: Sequence[str], existingNames: Sequence[str], replace: bool) -> list[tuple[str, bool]]:
    """Where each new segment goes: ``(segment name, replaces the existing segment of that name)``.

    Existing segments are never removed or overwritten, except that with ``replace`` a segment with
    the same name (case-insensitive, as Slicer's ``GetSegmentIdBySegmentName``) gets the new result.
    Without ``replace`` the existing segment is kept and the new one is added as ``name (2)``.
    """
    existing = {n.lower() for n in existingNames}
    taken = set(existing)
    replaced: set[str] = set()
    plan = []
    for name in names:
        key = name.lower()
        if replace and key in existing and key not in replaced:
            replaced.add(key)
            plan.append((name, True))
            continue
        new = uniqueName(name, taken)
        taken.add(new.lower())
        plan.append((new, False))
    return plan


@dataclass(frozen=True)
class SegmentAppearance:
    color: tuple[float, float, float]  # 0..1, as vtkSegment.SetColor wants
    terminology: str | None  # Slicer's 7-part TerminologyEntry tag, or None
    source: str  # "abdomen13", "slicer" or "generated"


INVALID_TERMINOLOGY_COLOR = (127, 127, 127)  # vtkSlicerTerminologyType's "no recommended colour"

# slicerLookup(label) -> (serialized terminology entry, recommended RGB 0..255 or None) or None
TerminologyLookup = Callable[[str], "tuple[str, tuple[int, int, int] | None] | None"]


def terminologyLabels(name: str) -> list[str]:
    """Spellings to look up in Slicer's terminology (its ``3dSlicerLabel`` match is exact)."""
    labels = []
    for label in (name.strip(), name.strip().lower(), normalize(name)):
        if label and label not in labels:
            labels.append(label)
    return labels


def segmentAppearance(name: str, index: int, slicerLookup: TerminologyLookup | None = None) -> SegmentAppearance:
    """Colour and terminology of the segment for prompt ``name``.

    The abdomen13 table first (its colour and SNOMED code), else Slicer's terminology looked up by
    label (``slicerLookup``, e.g. "urinary bladder", "right lung"), else a generated colour that is
    distinct for each ``index`` and no terminology.
    """
    organ = lookup(name)
    if organ is not None and organ.color is not None:
        return SegmentAppearance(tuple(c / 255.0 for c in organ.color), organ.terminology(), "abdomen13")
    if slicerLookup is not None:
        for label in terminologyLabels(name):
            found = slicerLookup(label)
            if found:
                entry, rgb = found
                if rgb is None or tuple(rgb) == INVALID_TERMINOLOGY_COLOR:
                    rgb = generated_color(index)
                return SegmentAppearance(tuple(c / 255.0 for c in rgb), entry, "slicer")
    return SegmentAppearance(tuple(c / 255.0 for c in generated_color(index)), None, "generated")


def modalityFromDicom(value: str | None) -> str | None:
    """'ct' or 'mr' from a DICOM Modality value (Slicer keeps it as the 'DICOM.Modality' attribute)."""
    return {"CT": "ct", "MR": "mr"}.get((value or "").strip().upper())


# --------------------------------------------------------------------------------------------------
# Dependencies


def backendReport(usedPackage: str | Path, usedVersion: str, installed: tuple[str, str] | None = None) -> tuple[bool, str]:
    """Which TGatedSegmentLib the module runs, in one line, and whether another copy is being ignored.

    ``installed``: (version, package folder) of a ``tgated-segment`` pip-installed into Slicer's
    Python, if any. The module puts its bundled copy first on ``sys.path``, so such a copy never
    silently replaces the one the extension was built with; this says so instead of hiding it.
    Returns (another copy is ignored, the line).
    """
    used = Path(usedPackage).resolve()
    line = f"TGatedSegment backend: TGatedSegmentLib {usedVersion} from {used}"
    if installed is None or Path(installed[1]).resolve() == used:
        return False, line
    return True, (f"{line}; the tgated-segment {installed[0]} installed in Slicer's Python ({installed[1]}) is not "
                  f"used (uninstall it with pip, or remove the extension, to use that one)")


def readRequirements(path: str | Path) -> list[str]:
    """Requirement lines of a requirements.txt (comments and blanks dropped)."""
    lines = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def requirementName(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def _satisfies(version: str, requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no version check without 'packaging'; presence is what matters most
        return True
    try:
        return Requirement(requirement).specifier.contains(version, prereleases=True)
    except Exception:
        return True


def missingRequirements(requirements: Sequence[str]) -> list[str]:
    """The requirements not installed (or too old) in this Python, checked without importing them."""
    import importlib.metadata
    import importlib.util

    missing = []
    for requirement in requirements:
        name = requirementName(requirement)
        importName = IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))
        if importlib.util.find_spec(importName) is None:
            missing.append(requirement)
            continue
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # importable without metadata (e.g. built into Slicer): accept it
        if not _satisfies(version, requirement):
            missing.append(requirement)
    return missing


# --------------------------------------------------------------------------------------------------
# Backend command lines


def backendEnvironment(libraryParent: str | Path, pythonPath: str | None = None) -> dict[str, str]:
    """Variables for the backend process: the folder holding TGatedSegmentLib first on PYTHONPATH,
    unbuffered output so that log lines arrive as they are written."""
    paths = [str(libraryParent)] + [p for p in (pythonPath or "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1"}


def segmentArguments(
    inputPath: str | Path,
    outputPath: str | Path,
    prompts: Sequence[str],
    checkpoint: str | Path | None = None,
    device: str = "auto",
    modality: str = "auto",
    threshold: float | None = None,
    batchSize: int | None = None,
    uncertainty: int = 0,
    uncertaintyOutput: str | Path | None = None,
) -> list[str]:
    """Arguments after ``python -m TGatedSegmentLib``: the same ``segment`` command users run in a shell."""
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompt given")
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device '{device}': use auto, cpu or cuda")
    modality = (modality or "auto").lower()
    if modality not in ("auto", "ct", "mr"):
        raise ValueError(f"unknown modality '{modality}': use auto, ct or mr")
    args = ["segment", str(inputPath), "--prompts", ", ".join(prompts), "--output", str(outputPath),
            "--device", device, "--modality", modality, "--progress", "json", "--overwrite"]
    if checkpoint:
        args += ["--checkpoint", str(checkpoint)]
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold {threshold} is outside (0, 1)")
        args += ["--threshold", repr(float(threshold))]
    if batchSize is not None:
        if int(batchSize) < 1:
            raise ValueError(f"batch size {batchSize} must be at least 1")
        args += ["--batch-size", str(int(batchSize))]
    if uncertainty:
        if int(uncertainty) < 2 or uncertaintyOutput is None:
            raise ValueError(f"an uncertainty map needs at least 2 samples and a folder, got {uncertainty}")
        args += ["--uncertainty", str(int(uncertainty)), "--uncertainty-output", str(uncertaintyOutput)]
    return args


# The uncertainty map shown in Slicer: predictive entropy of the most uncertain prompt (nats).
UNCERTAINTY_FILE = "entropy_combined.nii.gz"
UNCERTAINTY_MAX = 0.6931  # ln 2: a probability of 0.5
UNCERTAINTY_SHOWN_FROM = 0.05  # lower values are drawn transparent in the overlay
UNCERTAINTY_COLORS = "vtkMRMLColorTableNodeFileInferno.txt"


def readUncertainty(folder: str | Path, expectedGeometry):
    """The combined entropy map (k, j, i) from the backend's uncertainty folder, refused off the grid."""
    import SimpleITK as sitk

    from TGatedSegmentLib.io.volume import Geometry

    path = Path(folder) / UNCERTAINTY_FILE
    image = sitk.ReadImage(str(path))
    geometry = Geometry.from_image(image)
    if not geometry.matches(expectedGeometry):
        raise BackendError("The uncertainty map does not lie on the volume's voxel grid, so it was not imported",
                           "Report this as a bug, with the details.",
                           f"volume: {expectedGeometry.to_dict()}\nmap: {geometry.to_dict()}", "GeometryMismatch")
    return sitk.GetArrayFromImage(image)


# Options of `tgated train` (issue 3) that train(...) accepts, as Python keyword -> (flag, kind).
TRAIN_OPTIONS = {
    "val": ("--val", "value"),
    "base": ("--base", "value"),
    "tokenizer": ("--tokenizer", "value"),
    "recipe": ("--recipe", "value"),
    "maxMinutes": ("--max-minutes", "value"),
    "adapter": ("--adapter", "value"),
    "refine": ("--refine", "int"),
    "epochs": ("--epochs", "int"),
    "steps": ("--steps", "int"),
    "batchSize": ("--batch-size", "int"),
    "noTemporal": ("--no-temporal", "flag"),
    "freezeEncoders": ("--freeze-encoders", "flag"),
    "resume": ("--resume", "resume"),
    "device": ("--device", "value"),
    "seed": ("--seed", "int"),
}


def _camel(key: str) -> str:
    """``batch_size`` -> ``batchSize`` so that both spellings work from the console."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def trainArguments(datasetFolder: str | Path, outputFolder: str | Path, **options) -> list[str]:
    """Arguments after ``python -m TGatedSegmentLib`` for ``train``; ``resume=True`` continues the run
    in ``outputFolder``. Unknown options are refused with the list of known ones."""
    args = ["train", "--data", str(datasetFolder), "--output", str(outputFolder), "--progress", "json"]
    for key, value in options.items():
        name = _camel(key)
        if name not in TRAIN_OPTIONS:
            raise TypeError(f"unknown training option '{key}'; known: {', '.join(TRAIN_OPTIONS)}")
        flag, kind = TRAIN_OPTIONS[name]
        if value is None or value is False:
            continue
        if kind == "flag":
            args.append(flag)
        elif kind == "resume":
            args += [flag, str(outputFolder) if value is True else str(value)]
        elif kind == "int":
            args += [flag, str(int(value))]
        else:
            args += [flag, str(value)]
    return args


# --------------------------------------------------------------------------------------------------
# Progress and errors


def parseEventLine(line: str) -> dict | None:
    """The backend's JSON progress object on this output line, or None for a plain log line."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


# Where each stage of `segment` sits on the panel's 0..100 progress bar.
SEGMENT_STAGES = {"export": (0, 3), "load": (3, 10), "segment": (10, 90), "write": (90, 94), "import": (94, 100)}
STAGE_TEXT = {
    "export": "Preparing the volume",
    "load": "Loading the model",
    "segment": "Segmenting: slice {done} of {total}",
    "write": "Writing the result",
    "import": "Importing segments: {done} of {total}",
    "train": "Training: step {done} of {total}",
    "epoch": "Training: epoch {done} of {total}",
    "validate": "Validating: volume {done} of {total}",
}


class ProgressTracker:
    """Turns backend events into (percent, text) for a progress bar; remembers what ``info`` said."""

    def __init__(self, stages: dict[str, tuple[int, int]] | None = None):
        self.stages = stages
        self.percent = 0
        self.text = ""
        self.info: dict = {}

    def update(self, event: dict) -> dict:
        """``event`` with ``percent`` and ``text`` added (a new dict)."""
        kind = event.get("event")
        if kind == "progress":
            stage = str(event.get("stage", ""))
            done, total = int(event.get("done", 0)), max(int(event.get("total", 0)), 1)
            fraction = min(max(done / total, 0.0), 1.0)
            if self.stages and stage in self.stages:
                low, high = self.stages[stage]
                self.percent = max(self.percent, int(round(low + (high - low) * fraction)))
            else:
                self.percent = int(round(100 * fraction))
            template = STAGE_TEXT.get(stage, stage.capitalize() + ": {done} of {total}")
            self.text = template.format(done=done, total=total)
        elif kind == "info":
            self.info.update({k: v for k, v in event.items() if k != "event"})
            self.text = describeInfo(self.info)
        elif kind == "done":
            self.percent = max(self.percent, self.stages["write"][1] if self.stages and "write" in self.stages else 100)
            self.text = "Backend finished"
        return {**event, "percent": self.percent, "text": self.text}


def describeInfo(info: dict) -> str:
    parts = []
    if info.get("device"):
        parts.append(f"device {info['device']}")
    if info.get("modality"):
        parts.append(str(info["modality"]).upper())
    if info.get("slices"):
        parts.append(f"{info['slices']} slices")
    if info.get("orientation"):
        parts.append(f"stored {info['orientation']}")
    return ", ".join(parts) or str(info.get("message", ""))


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


def errorFromBackend(event: dict | None, returncode: int | None, output: Sequence[str], command: Sequence[str],
                     what: str = "Segmentation") -> BackendError:
    """A plain-words :class:`BackendError` from the backend's error event (if any), exit code and output."""
    event = event or {}
    kind, message, hint = event.get("kind") or "", event.get("message") or "", event.get("hint")
    text = "\n".join(output)
    details = f"Command: {' '.join(map(str, command))}\nExit code: {returncode}\n\nLast output:\n{text}".rstrip()
    missing = _MISSING_MODULE.search(message) or (None if kind else _MISSING_MODULE.search(text))
    if missing:
        return BackendError(f"{what} needs the Python package '{missing.group(1)}', which is not installed",
                            "Open the TGatedSegment module and press Apply: it offers to install what is missing "
                            "(PyTorch through the PyTorch extension).", details, "MissingDependency", returncode)
    if kind == "OutOfMemory":
        return BackendError(f"{what} ran out of memory ({message})",
                            hint or "Choose CPU as the device, or a smaller batch size, under Advanced.",
                            details, kind, returncode)
    if kind == "CheckpointError":
        return BackendError(f"The model could not be loaded: {message}", hint, details, kind, returncode)
    if kind == "InputError":
        return BackendError(f"{what} cannot use this input: {message}", hint, details, kind, returncode)
    if kind:
        return BackendError(f"{what} failed: {message}" if message else f"{what} failed ({kind})", hint, details,
                            kind, returncode)
    cliError = next((line for line in reversed(output) if line.startswith("tgated: error: ")), None)
    if cliError:  # a command run without --progress json reports its error as this one line
        return BackendError(f"{what} failed: {cliError[len('tgated: error: '):].strip()}", None, details,
                            "CommandError", returncode)
    last = next((line for line in reversed(output) if line.strip()), "no output")
    return BackendError(f"{what} stopped unexpectedly (exit code {returncode}): {last.strip()[:300]}",
                        "See the details; run the same command in a terminal to reproduce it.", details, "Crash",
                        returncode)


# --------------------------------------------------------------------------------------------------
# The backend process


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

    def __init__(self, args: Sequence[str], env: dict | None = None, cwd: str | None = None,
                 launcher: Callable | None = None, onEvent: Callable[[dict], None] | None = None,
                 onLog: Callable[[str], None] | None = None, keepLines: int = 200):
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


# --------------------------------------------------------------------------------------------------
# Volume hand-over


def exportVolume(arrayKJI, ijkToRAS, path: str | Path):
    """Write a Slicer volume (its (k, j, i) voxel array and 4x4 IJK-to-RAS matrix) to ``path`` with
    its exact geometry; returns the :class:`~TGatedSegmentLib.io.volume.Geometry` written.

    The file stores LPS (ITK convention) while Slicer works in RAS: the conversion is the backend's
    own ``Geometry.from_ijk_to_ras``, so sagittal, coronal and oblique volumes keep their placement.
    """
    import numpy as np
    import SimpleITK as sitk

    from TGatedSegmentLib.io.volume import Geometry, image_from_array

    array = np.asarray(arrayKJI)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D scalar volume, got an array of shape {array.shape}")
    geometry = Geometry.from_ijk_to_ras(ijkToRAS, array.shape[::-1])
    sitk.WriteImage(image_from_array(array, geometry), str(path), useCompression=False)
    return geometry


def readResult(path: str | Path, expectedGeometry):
    """The backend's ``.seg.nrrd`` as shared layers (``SegmentLayers``: uint8 (L, k, j, i) and each
    segment's layer and label value), refused unless it is on exactly the exported grid (a result on
    another grid would land in the wrong place). Kept as layers, not one mask per segment: 13 organs
    then cost one byte per voxel on their way into the scene, not 13."""
    from TGatedSegmentLib.io.seg_nrrd import read_segmentation_layers

    result = read_segmentation_layers(path)
    if not result.geometry.matches(expectedGeometry):
        raise BackendError("The result does not lie on the volume's voxel grid, so it was not imported",
                           "Report this as a bug, with the details.",
                           f"volume: {expectedGeometry.to_dict()}\nresult: {result.geometry.to_dict()}", "GeometryMismatch")
    return result
