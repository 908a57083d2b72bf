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
  ``importModel(logic.runBackendCommand, path)``, which returns the imported model's facts;
  ``importError`` puts the backend's hints, written for its command line, in the panel's words.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

from TGatedSegmentLib.errors import TGatedError
from TGatedSegmentLib.model import card, store
from TGatedSegmentLib.model.importer import default_name

from .errors import BackendError
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
    return [(f["name"], f"{f['name']}  ({f['architecture_short']}, Dice {card.dice_summary(f)})") for f in listModels()]


def isImportedModel(text: str | None) -> bool:
    """Whether the model field's text is an imported model's name (and not a folder of that name)."""
    text = (text or "").strip()
    return bool(text) and not Path(text).expanduser().exists() and store.find_model(text) is not None


def modelCard(name: str) -> str:
    """The model card (markdown) of an imported model; ValueError if there is none of that name."""
    folder = store.find_model(name)
    if folder is None:
        raise ValueError(
            _("No imported model named '{name}'. {hint}").format(name=name, hint=store.unknown_model_hint(name))
        )
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
        name=facts["name"], architecture=facts["architecture_short"], trained=trained, measured=measured
    )


def displayCard(markdown: str) -> str:
    """A model card as the panel shows it: without its Hugging Face front matter (``---`` ... ``---``),
    which is metadata for the Hub, not text for a reader."""
    return re.sub(r"\A---\n.*?\n---\n+", "", markdown, count=1, flags=re.S)


def checkedModelName(name: str | None) -> str:
    """The name as it will be stored (lower case), or a ValueError that states the rule."""
    text = (name or "").strip()
    if not store.is_model_name(text):
        raise ValueError(
            _(
                "'{name}' cannot be a model name: use 1 to 64 letters, digits, '.', '_' and '-', starting "
                "with a letter or a digit (for example liver-ct-v1)."
            ).format(name=text)
        )
    return store.normalize_name(text)


def importArguments(source: str | Path, name: str | None = None, overwrite: bool = False) -> list[str]:
    """The backend command line (after ``-m TGatedSegmentLib``) that imports ``source`` as ``name``
    (default: the name the backend would choose, computed here so the caller knows it). ``--json``:
    the result is a JSON done event, a failure a JSON error event (the panel's protocol)."""
    args = ["models", "import", str(source), "--name", name or suggestedName(source), "--json"]
    return args + (["--overwrite"] if overwrite else [])


def _importHints() -> list[tuple[str, str]]:
    """(what the backend's hint says, the panel's words for it), first match wins (the list of what
    can be imported also names "--config": it gets the general words below)."""
    return [
        (
            "--overwrite",
            _(
                "Answer Yes when asked to replace it (from the Python console: overwrite=True), or import it "
                "under another name."
            ),
        ),
        (
            "Pass --config",
            _(
                "Put the config.json of the checkpoint the weights came from in the same folder as the "
                ".safetensors file, or import that whole checkpoint folder instead."
            ),
        ),
        (
            "Pass --tokenizer",
            _(
                "Put the tokenizer files of the checkpoint the weights came from beside the .safetensors "
                "file, or import that whole checkpoint folder instead."
            ),
        ),
        (
            "--base-config",
            _(
                "The authors' .pt is converted onto the CLIPSeg base model (CIDAS/clipseg-rd64-refined, "
                "downloaded once): import it once with a network connection, or convert it in a shell "
                "with 'tgated models import FILE --base-config CONFIG.json' and import the result."
            ),
        ),
        (
            "--base or --checkpoint",
            _(
                "Choose it as the model directly (Browse...): it runs zero-shot. To train it on "
                "organs, use logic.train(..., base=FOLDER) and import the run's best folder."
            ),
        ),
    ]


def importHint(hint: str | None) -> str | None:
    """The backend's hint for a failed import, in the panel's words when it names the command line's
    options (``--overwrite``, ``--config``, ...); any other hint as it is."""
    if not hint:
        return hint
    for option, words in _importHints():
        if option in hint:
            return words
    if "--" in hint or "`" in hint:  # another command line: say what the panel can import
        return _(
            "Choose a checkpoint folder (the one holding config.json; of a training run, its best folder), a "
            ".zip made by 'tgated models export', a .safetensors file with its config.json beside it, or the "
            "authors' .pt/.pth file."
        )
    return hint


def importError(error: BackendError) -> BackendError:
    """A failed import's :class:`BackendError` with its hint in the panel's words (message, details,
    kind and exit code unchanged: the backend's own hint stays in the details)."""
    hint = importHint(error.hint)
    details = error.details
    if hint != error.hint:
        details = (f"Backend's hint: {error.hint}\n\n" + details).rstrip()
    return BackendError(error.message, hint, details, error.kind, error.returncode)


def suggestedName(source: str | Path) -> str:
    """The name a model gets when none is given (``runs/liver/best`` -> ``liver-best``; a zip: its model's name)."""
    try:
        return default_name(Path(source).expanduser())
    except TGatedError as exc:  # an unreadable zip: the import itself reports it
        raise ValueError(exc.one_line()) from None


def nameTaken(name: str) -> bool:
    """Whether importing under ``name`` needs overwrite (ask the user before passing it)."""
    return (store.models_dir() / store.normalize_name(name)).exists()


def importModel(
    runBackendCommand: Callable[[Sequence[str]], object],
    source: str | Path,
    name: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Import ``source`` through the backend (``runBackendCommand``: the module logic's, which raises
    its ``BackendError`` with the backend's message and fix) and return the model's facts."""
    name = checkedModelName(name) if name else suggestedName(source)
    runBackendCommand(importArguments(source, name, overwrite))
    return card.model_facts(store.models_dir() / name, name)
