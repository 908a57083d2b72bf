"""The model choice: what the text in the panel's model box means, and where a relative path points.

The authors of T-Gated publish no trained weights, so a user without a checkpoint gets the zero-shot
CLIPSeg base (``CIDAS/clipseg-rd64-refined``), a model of natural photos that was never shown a CT:
:func:`modelNote` says so, and where to get or how to train a model, whenever no trained model is
chosen. A relative path is looked up in the scene's folder, then in the models folder the user chose
(:func:`resolveCheckpoint`), never in the extension's folder (where the backend process starts). A
model imported into the shared models folder (``modelstore``, ``tgated models import``) is chosen by
its name.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from TGatedSegmentLib.model.configuration import DEFAULT_BASE_MODEL, FORMAT_NAME
from TGatedSegmentLib.model.source import looks_like_hub_id

from .i18n import tr as _
from .modelstore import importedModelNote, isImportedModel

# Where the documentation says how to get or train a model (docs/slicer.md, section "Getting a model").
MODEL_HELP = "docs/slicer.md#getting-a-model"


def looksLikeHubId(text: str) -> bool:
    """``owner/name`` that is not a path: the backend's rule (``model.source.looks_like_hub_id``)."""
    return looks_like_hub_id(text)


def noTrainedModelNote() -> str:
    """What the panel says while no trained model is chosen."""
    return _("No trained model chosen: the authors of T-Gated publish no trained weights, so this runs zero-shot "
             "with {base}, a CLIPSeg model of natural photos, not of CT or MR (downloaded once, about 600 MB): "
             "expect rough or empty segments. Train a model (logic.train in the Python console) or choose a "
             "checkpoint folder someone trained; see {help}.").format(base=DEFAULT_BASE_MODEL, help=MODEL_HELP)


def resolveCheckpoint(text: str | None, searchFolders: Sequence[str | None] = ()) -> str | None:
    """The checkpoint to pass to the backend: None (zero-shot), an absolute folder, or a hub id.

    ``~`` is expanded; a relative path is looked up in each of ``searchFolders`` in turn (the
    scene's folder, then the user's models folder), and an ``owner/name`` found in none of them is a
    hub id. Anything else is a ValueError that says where it looked.
    """
    text = (text or "").strip()
    if not text:
        return None
    if isImportedModel(text):  # a name of the shared models folder: the backend resolves it
        return text
    path = os.path.expanduser(text)
    if os.path.isabs(path):
        return os.path.normpath(path)
    folders = [os.path.abspath(os.path.expanduser(f)) for f in searchFolders if f]
    for folder in folders:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    if looksLikeHubId(text):
        return text
    where = ", ".join(folders) if folders else _("(no scene folder and no models folder set)")
    raise ValueError(_("The model '{model}' was not found: a relative path is looked up in the scene's folder and "
                       "then in the models folder ({where}). Choose the checkpoint folder with Browse..., or give "
                       "its full path.").format(model=text, where=where))


def modelNote(text: str | None, searchFolders: Sequence[str | None] = ()) -> str:
    """One line under the model picker saying what the current choice means."""
    if not (text or "").strip():
        return noTrainedModelNote()
    imported = importedModelNote(text)
    if imported is not None:
        return imported
    try:
        resolved = resolveCheckpoint(text, searchFolders)
    except ValueError:
        return _("Not found: give a checkpoint folder or a hub id (owner/name); leave empty for zero-shot.")
    name = os.path.basename(resolved.rstrip("/\\")) if resolved else ""
    if os.path.isdir(resolved):
        try:
            with open(os.path.join(resolved, "config.json"), encoding="utf-8") as handle:
                raw = json.load(handle)
        except (OSError, ValueError):
            return _("'{name}' has no readable config.json: not a checkpoint folder.").format(name=name)
        if raw.get("format") == FORMAT_NAME:
            kind = _("T-Gated (reads 5 neighbouring slices)") if raw.get("adapter") else _("slice-wise baseline")
            if raw.get("training"):
                return _("Checkpoint folder: {kind}, trained.").format(kind=kind)
            return _("Checkpoint folder: {kind}, untrained (random adapter: for tests only).").format(kind=kind)
        if raw.get("model_type") == "clipseg":
            return _("A plain CLIPSeg model folder: zero-shot, no organ training.")
        return _("'{name}' is not a TGatedSegment checkpoint folder.").format(name=name)
    if os.path.exists(resolved):
        return _("A single file: choose the checkpoint folder that holds config.json.")
    if looksLikeHubId(resolved):
        return _("Hugging Face Hub model '{model}': downloaded once into the local cache, then used offline.").format(
            model=resolved)
    return _("Not found: give a checkpoint folder or a hub id (owner/name); leave empty for zero-shot.")
