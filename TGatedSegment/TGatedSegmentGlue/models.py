"""The model choice: what the text in the panel's model box means, and where a relative path points.

The authors of T-Gated publish no trained weights, so a user without a checkpoint gets the zero-shot
CLIPSeg base (``CIDAS/clipseg-rd64-refined``), a model of natural photos that was never shown a CT:
:func:`modelNote` says so, and where to get or how to train a model, whenever no trained model is
chosen. A relative path is looked up in the scene's folder, then in the models folder the user chose
(:func:`resolveCheckpoint`), never in the extension's folder (where the backend process starts). A
model imported into the shared models folder (``modelstore``, ``tgated models import``) is chosen by
its name. :func:`modelDetails` is what the panel's model card area shows for the choice, and
:func:`modelHelpUrl` where its "How to get a model" link points.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Sequence

from TGatedSegmentLib.model.configuration import DEFAULT_BASE_MODEL, FORMAT_NAME
from TGatedSegmentLib.model.source import looks_like_hub_id

from .i18n import tr as _
from .modelstore import displayCard, importedModelNote, isImportedModel, modelCard

# Where the documentation says how to get or train a model (docs/slicer.md, section "Getting a model").
MODEL_HELP = "docs/slicer.md#getting-a-model"
MODEL_HELP_SECTION = MODEL_HELP.split("#")[1]


def looksLikeHubId(text: str) -> bool:
    """``owner/name`` that is not a path: the backend's rule (``model.source.looks_like_hub_id``)."""
    return looks_like_hub_id(text)


def noTrainedModelNote() -> str:
    """What the panel says while no trained model is chosen."""
    return _(
        "No trained model chosen: the authors of T-Gated publish no trained weights, so this runs zero-shot "
        "with {base}, a CLIPSeg model of natural photos, not of CT or MR (downloaded once, about 600 MB): "
        "expect rough or empty segments. Import a model someone trained (Import model...), train one "
        "(logic.train in the Python console) or choose a checkpoint folder; see {help}."
    ).format(base=DEFAULT_BASE_MODEL, help=MODEL_HELP)


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
    raise ValueError(
        _(
            "The model '{model}' was not found: a relative path is looked up in the scene's folder and "
            "then in the models folder ({where}). Choose the checkpoint folder with Browse..., or give "
            "its full path."
        ).format(model=text, where=where)
    )


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
            model=resolved
        )
    return _("Not found: give a checkpoint folder or a hub id (owner/name); leave empty for zero-shot.")


def modelHelpUrl(sourceDocs: str | Path | None = None, homepage: str | None = None) -> str:
    """Where the panel's "How to get a model" link points: ``sourceDocs`` (the checkout's
    ``docs/slicer.md``, when the module runs from a source tree) as a file URL, else the extension's
    homepage (``docs/slicer.md`` in its public repository, from the extension's metadata) at the
    section "Getting a model", else "" (no link: a build from a tree with no public repository)."""
    if sourceDocs and os.path.isfile(sourceDocs):
        return Path(sourceDocs).resolve().as_uri()  # no #section: a local .md opens in an editor
    homepage = (homepage or "").strip()
    if homepage.startswith(("https://", "http://")):
        return homepage + "#" + MODEL_HELP_SECTION if homepage.endswith(MODEL_HELP.split("#")[0]) else homepage
    return ""


def modelNoteHtml(note: str, helpUrl: str = "") -> str:
    """The line under the model field as rich text: the note, escaped, and the "How to get a model"
    link when there is somewhere to point it."""
    text = html.escape(note)
    if helpUrl:
        text += ' <a href="{url}">{label}</a>'.format(
            url=html.escape(helpUrl, quote=True), label=html.escape(_("How to get a model"))
        )
    return text


def modelDetails(text: str | None, searchFolders: Sequence[str | None] = (), helpUrl: str = "") -> str:
    """The panel's model card area (markdown) for the model field's text: the model card of an
    imported model, of a checkpoint folder (read from its files, as ``tgated models show FOLDER``),
    the note of anything else (a hub id, a plain CLIPSeg folder, a path not found), and with nothing
    chosen, that the authors publish no trained weights and how to get a model."""
    text = (text or "").strip()
    link = "\n\n[{label}]({url})".format(label=_("How to get a model"), url=helpUrl) if helpUrl else ""
    if not text:
        return (
            "\n\n".join(
                [
                    noTrainedModelNote(),
                    _("To get one:"),
                    "- "
                    + _(
                        "import a model someone trained with Import model... (a .zip made by 'tgated models export', a "
                        "checkpoint folder, a .safetensors file with its config.json beside it, or the authors' .pt);"
                    )
                    + "\n- "
                    + _(
                        "train one on a public dataset: logic.train(...) in the Python console, or 'tgated train' in "
                        "a shell;"
                    )
                    + "\n- "
                    + _("or choose a checkpoint folder someone trained with Browse..."),
                ]
            )
            + link
        )
    if isImportedModel(text):
        return displayCard(modelCard(text))
    note = modelNote(text, searchFolders)
    try:
        folder = resolveCheckpoint(text, searchFolders)
    except ValueError:
        return note + link
    if folder and _isCheckpointFolder(folder):
        from TGatedSegmentLib.model import card

        try:
            return "**" + note + "**\n\n" + displayCard(card.render_card(card.model_facts(folder)))
        except OSError:  # a file of the folder unreadable: the note says what is known
            return note
    return note + link


def _isCheckpointFolder(folder: str) -> bool:
    """A folder whose config.json is a TGatedSegment checkpoint's (the backend's own test)."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and raw.get("format") == FORMAT_NAME
