"""The shared model folder, for the Slicer panel: list the imported models, show a card, import one.

``tgated models import`` in a shell and this panel use the same folder (``$TGATED_HOME/models``, else
``tgated-segment/models`` in the user cache folder), so a model imported on either side appears on
both, and its NAME works in the panel's model field as it does for ``--checkpoint``: the backend
resolves it.

Listing and cards are read here, in Slicer's own Python (``TGatedSegmentLib.model.store`` and
``card`` import no torch), so a model menu fills at once; importing checks the model by loading it,
which needs torch, so it runs in the backend process. The panel's side (wired by the module):

* ``listModels()`` / ``modelChoices()``: the models, e.g. for a combo box;
* ``modelCard(name)``: the model card (markdown) for a details view;
* ``importedModelNote(text)``: the line under the model field when it holds an imported name (None otherwise);
* "Import model...": a file dialog with ``IMPORT_FILE_FILTER`` (or a folder dialog), then
  ``importModel(logic.runBackendCommand, path)``, which returns the imported model's facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from TGatedSegmentLib.errors import TGatedError
from TGatedSegmentLib.model import card, store
from TGatedSegmentLib.model.importer import default_name

from .i18n import tr as _

IMPORT_FILE_FILTER = _("Models (*.zip *.safetensors *.pt *.pth);;All files (*)")


def modelsFolder() -> str:
    """Where the imported models are (it may not exist yet)."""
    return str(store.models_dir())


def listModels() -> list[dict]:
    """Facts of every imported model (``card.model_facts``: name, architecture, parameters,
    size_bytes, recipe, dice, ...), sorted by name."""
    return [card.model_facts(store.models_dir() / name, name) for name in store.model_names()]


def modelChoices() -> list[tuple[str, str]]:
    """(name, label) per imported model: the label adds the architecture and the measured Dice."""
    return [(f["name"], f"{f['name']}  ({f['architecture_short']}, Dice {card.dice_summary(f)})")
            for f in listModels()]


def isImportedModel(text: str | None) -> bool:
    """Whether the model field's text is an imported model's name (and not a folder of that name)."""
    text = (text or "").strip()
    return bool(text) and not Path(text).expanduser().exists() and store.find_model(text) is not None


def modelCard(name: str) -> str:
    """The model card (markdown) of an imported model; ValueError if there is none of that name."""
    folder = store.find_model(name)
    if folder is None:
        raise ValueError(_("No imported model named '{name}'. {hint}").format(name=name, hint=store.unknown_model_hint(name)))
    return card.render_card(card.model_facts(folder, folder.name))


def importedModelNote(text: str | None) -> str | None:
    """One line for the model field when it names an imported model; None for anything else (the
    model choice's note, ``models.modelNote``, covers folders, hub ids and the zero-shot default)."""
    if not isImportedModel(text):
        return None
    facts = card.model_facts(store.find_model(text))
    dice = card.dice_summary(facts)
    measured = _("mean Dice {dice}").format(dice=dice) if dice != "-" else _("Dice not measured")
    trained = _("trained") if facts["trained"] else _("untrained (random adapter: for tests only)")
    return _("Imported model '{name}': {architecture}, {trained}, {measured}.").format(
        name=facts["name"], architecture=facts["architecture_short"], trained=trained, measured=measured)


def importArguments(source: str | Path, name: str | None = None, overwrite: bool = False) -> list[str]:
    """The backend command line (after ``-m TGatedSegmentLib``) that imports ``source`` as ``name``
    (default: the name the backend would choose, computed here so the caller knows it)."""
    args = ["models", "import", str(source), "--name", name or suggestedName(source)]
    return args + (["--overwrite"] if overwrite else [])


def suggestedName(source: str | Path) -> str:
    """The name a model gets when none is given (``runs/liver/best`` -> ``liver-best``; a zip: its model's name)."""
    try:
        return default_name(Path(source).expanduser())
    except TGatedError as exc:  # an unreadable zip: the import itself reports it
        raise ValueError(exc.one_line()) from None


def nameTaken(name: str) -> bool:
    """Whether importing under ``name`` needs overwrite (ask the user before passing it)."""
    return (store.models_dir() / store.normalize_name(name)).exists()


def importModel(runBackendCommand: Callable[[Sequence[str]], list], source: str | Path, name: str | None = None,
                overwrite: bool = False) -> dict:
    """Import ``source`` through the backend (``runBackendCommand``: the module logic's, which raises
    its ``BackendError`` with the backend's message and fix) and return the model's facts."""
    name = store.normalize_name(name or suggestedName(source))
    runBackendCommand(importArguments(source, name, overwrite))
    return card.model_facts(store.models_dir() / name, name)
