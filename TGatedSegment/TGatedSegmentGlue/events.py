"""The backend's progress protocol: one JSON object per output line (``--progress json``), turned into
a percentage and a line of text for the panel's progress bar or the Python console.

Events: ``progress`` (stage, done, total), ``info`` (device, modality, ...), ``done`` (the result
summary), ``error`` (kind, message, hint), ``cancelled``. Any other output line is a log line.
"""

from __future__ import annotations

import json

from .i18n import tr as _


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


def stageText(stage: str, done: int, total: int) -> str:
    """The progress bar's text for a stage of the backend (or of the logic's own export and import)."""
    texts = {
        "export": _("Preparing the volume"),
        "load": _("Loading the model"),
        "segment": _("Segmenting: slice {done} of {total}"),
        "write": _("Writing the result"),
        "import": _("Importing segments: {done} of {total}"),
        "train": _("Training: step {done} of {total}"),
        "epoch": _("Training: epoch {done} of {total}"),
        "validate": _("Validating: volume {done} of {total}"),
    }
    template = texts.get(stage, stage.capitalize() + ": {done} of {total}")
    return template.format(done=done, total=total)


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
            self.text = stageText(stage, done, total)
        elif kind == "info":
            self.info.update({k: v for k, v in event.items() if k != "event"})
            self.text = describeInfo(self.info)
        elif kind == "done":
            self.percent = max(self.percent, self.stages["write"][1] if self.stages and "write" in self.stages else 100)
            self.text = _("Backend finished")
        return {**event, "percent": self.percent, "text": self.text}


def describeInfo(info: dict) -> str:
    parts = []
    if info.get("device"):
        parts.append(_("device {device}").format(device=info["device"]))
    if info.get("modality"):
        parts.append(str(info["modality"]).upper())
    if info.get("slices"):
        parts.append(_("{count} slices").format(count=info["slices"]))
    if info.get("orientation"):
        parts.append(_("stored {orientation}").format(orientation=info["orientation"]))
    return ", ".join(parts) or str(info.get("message", ""))
