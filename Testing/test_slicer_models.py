"""The panel's models: import a model through the logic (a real backend process loads it; torch never
loads in Slicer's), the model list and card it shows, the question before replacing a model, plain
messages for bad files, the "no trained model" note with its link, and the translation of it all.

Run against the Slicer stand-in (Testing/slicer_stub/) with the real backend as PythonSlicer, as
test_models_cli.py runs ``tgated models`` itself; each test has a models folder of its own
(``TGATED_HOME``, which the backend process inherits).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTING = Path(__file__).resolve().parent
REPO = TESTING.parent
MODULE = REPO / "TGatedSegment"
for folder in (TESTING / "slicer_stub", MODULE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import slicer  # noqa: E402  (the stand-in)
from helpers.env import backend_command, python_env  # noqa: E402
from helpers.slicer import AXIAL, fake_logic, logic, make_volume, slicer_tmp  # noqa: E402,F401

import TGatedSegment  # noqa: E402
import TGatedSegmentGlue as glue  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty shared models folder for this test (the logic, the glue and the backend process see it)."""
    folder = tmp_path / "tgated-home"
    monkeypatch.setenv("TGATED_HOME", str(folder))
    return folder


@pytest.fixture
def no_dialogs(monkeypatch):
    """confirmYesNoDisplay answers from ``answers`` (and records what it was asked); the logic shows no other dialog."""
    asked, answers = [], []

    def confirm(text, windowTitle=None, parent=None, **kwargs):
        asked.append((text, windowTitle))
        if not answers:
            pytest.fail(f"asked unexpectedly: {text}")
        return answers.pop(0)

    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay", confirm)
    return asked, answers


def shell_import(source: Path, name: str, home: Path) -> None:
    """``tgated models import`` in a shell, on the same models folder."""
    env = {**python_env(), "TGATED_HOME": str(home)}
    proc = subprocess.run(
        backend_command("models", "import", str(source), "--name", name),
        capture_output=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr


def model_files(home: Path) -> dict[str, bytes]:
    """Every file of the models folder (hidden ones included), with its bytes."""
    root = home / "models"
    return (
        {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        if root.is_dir()
        else {}
    )


# --------------------------------------------------------------------------------------------------
# Import through the logic, the list and the card


def test_import_through_the_logic_lists_it_shows_its_card_and_segments_with_its_name(
    logic, home, tiny_checkpoint, tiny_baseline_checkpoint
):
    assert logic.listModels() == [] and logic.modelChoices() == []
    assert logic.importedModelsFolder() == str(home / "models")

    name = logic.importModel(str(tiny_checkpoint))  # no name: the folder's
    assert name == "tiny-tgated" and (home / "models" / "tiny-tgated" / "config.json").is_file()
    assert [m["name"] for m in logic.listModels()] == ["tiny-tgated"]
    ((choice, label),) = logic.modelChoices()
    assert choice == "tiny-tgated" and label.startswith("tiny-tgated  (T-Gated") and "Dice -" in label

    # A model imported in a shell shows up too (the list is read from the folder each time).
    shell_import(tiny_baseline_checkpoint, "from-shell", home)
    assert [name for name, _label in logic.modelChoices()] == ["from-shell", "tiny-tgated"]

    # The card: the backend's, shown without its Hub front matter.
    card = logic.modelCard("TINY-TGATED")  # names are looked up case-insensitively
    assert card.startswith("---\nlibrary_name: tgated-segment") and "# tiny-tgated" in card
    details = logic.modelDetails("tiny-tgated")
    assert details.startswith("# tiny-tgated") and "library_name" not in details
    for section in ("## Architecture", "## Training", "## Measured Dice", "## Licence", "Untrained"):
        assert section in details, section
    assert logic.modelNote("tiny-tgated").startswith("Imported model 'tiny-tgated': T-Gated")
    with pytest.raises(ValueError, match="No imported model named 'nope'.*Imported models: from-shell, tiny-tgated"):
        logic.modelCard("nope")

    # The name works as the checkpoint: the backend gets the name and resolves it in the same folder.
    volume, _voxels = make_volume(AXIAL, shape=(4, 10, 12))
    node = logic.segment(volume, "liver", checkpoint="tiny-tgated", device="cpu")
    assert node.GetSegmentation().GetNumberOfSegments() == 1


def test_importing_loads_no_torch_in_slicers_process(tmp_path, tiny_checkpoint):
    """The import (and the list and card) in a process like Slicer's: torch and transformers load only in
    the backend process that checks the model."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "PythonSlicer").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "PythonSlicer").chmod(0o755)
    code = f"""
        import json, os, sys
        sys.path[:0] = [{str(TESTING / "slicer_stub")!r}, {str(MODULE)!r}]
        import slicer
        slicer.resetStandIn({str(tmp_path / "temp")!r})
        import TGatedSegment
        logic = TGatedSegment.TGatedSegmentLogic()
        name = logic.importModel({str(tiny_checkpoint)!r}, name="checked")
        choices, card = logic.modelChoices(), logic.modelDetails(name)
        print(json.dumps({{"name": name, "choices": choices, "card": card[:40],
                          "loaded": sorted(m for m in ("torch", "transformers") if m in sys.modules)}}))
    """
    env = {
        **python_env(),
        "TGATED_HOME": str(tmp_path / "home"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        encoding="utf-8",
        env=env,
        cwd=str(TESTING),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["name"] == "checked" and seen["choices"][0][0] == "checked" and seen["card"].startswith("# checked")
    assert seen["loaded"] == []


# --------------------------------------------------------------------------------------------------
# A taken name: refused unless confirmed


def test_a_taken_name_is_replaced_only_when_confirmed(
    logic, home, no_dialogs, tiny_checkpoint, tiny_baseline_checkpoint
):
    asked, answers = no_dialogs
    assert logic.importModel(str(tiny_checkpoint), name="Liver") == "liver"
    before = model_files(home)

    # The console: refused, saying how to replace it; nothing asked, nothing changed.
    with pytest.raises(ValueError, match=r"A model named 'liver' is already imported\. Pass overwrite=True"):
        logic.importModel(str(tiny_baseline_checkpoint), name="liver")
    # The panel's way (ask=True): No keeps the model there.
    answers.append(False)
    with pytest.raises(glue.Cancelled, match="Not imported: the model 'liver' already there was kept"):
        logic.importModel(str(tiny_baseline_checkpoint), name="LIVER", ask=True)
    assert model_files(home) == before
    ((text, title),) = asked
    assert "'liver' is already imported" in text and str(tiny_baseline_checkpoint) in text
    assert title == "TGatedSegment: import model"

    # Yes replaces it.
    answers.append(True)
    assert logic.importModel(str(tiny_baseline_checkpoint), name="liver", ask=True) == "liver"
    assert len(asked) == 2 and logic.listModels()[0]["architecture_short"].startswith("slice-wise")
    assert logic.modelNote("liver").startswith("Imported model 'liver': slice-wise")
    # overwrite=True replaces without asking (a script's way).
    assert logic.importModel(str(tiny_checkpoint), name="liver", overwrite=True) == "liver"
    assert len(asked) == 2 and logic.listModels()[0]["architecture_short"].startswith("T-Gated")
    assert [p for p in (home / "models").iterdir()] == [home / "models" / "liver"]  # no hidden leftovers


# --------------------------------------------------------------------------------------------------
# Bad files and names: plain messages, nothing imported


def test_bad_files_give_plain_messages_and_import_nothing(logic, home, tmp_path, tiny_checkpoint):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(glue.BackendError) as info:
        logic.importModel(str(notes))
    error = info.value
    assert error.message == f"The import cannot use this input: '{notes}' is not a kind of model file tgated can import"
    assert error.hint.startswith("Choose a checkpoint folder (the one holding config.json")
    assert "--" not in error.hint and "`" not in error.hint
    assert "Backend's hint: Pass a checkpoint folder" in error.details and "models import" in error.details
    assert "Traceback" not in str(error)

    damaged = tmp_path / "liver.zip"
    damaged.write_bytes(b"PK not really")
    with pytest.raises(ValueError, match=r"cannot read .*liver\.zip' as a zip .*The file is damaged: copy it again"):
        logic.importModel(str(damaged))  # no name: reading the zip for its name already fails, before any process
    with pytest.raises(glue.BackendError) as info:
        logic.importModel(str(damaged), name="liver")
    assert info.value.message.startswith("The import cannot use this input: cannot read")
    assert info.value.hint == "The file is damaged: copy it again."

    weights = tmp_path / "bare" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes((tiny_checkpoint / "model.safetensors").read_bytes())
    with pytest.raises(glue.BackendError) as info:
        logic.importModel(str(weights))
    assert "is a bare weights file" in info.value.message
    assert info.value.hint.startswith("Put the config.json of the checkpoint the weights came from in the same folder")

    with pytest.raises(ValueError, match="does not exist: choose a model file"):
        logic.importModel(str(tmp_path / "missing.zip"))
    with pytest.raises(ValueError, match="cannot be a model name: use 1 to 64 letters"):
        logic.importModel(str(tiny_checkpoint), name="my model/v1")
    assert logic.listModels() == [] and model_files(home) == {}


def test_the_panels_words_for_the_backends_hints():
    """Every hint of the importer that names a command-line option gets the panel's words."""
    hints = {
        "Pass --overwrite to replace it, or --name to import this one under another name.": "Answer Yes when asked",
        "Pass --config with the config.json of the checkpoint it came from.": "Put the config.json",
        "Pass --tokenizer (a CLIP tokenizer folder or hub id, or 'compact' ...).": "Put the tokenizer files",
        "Make sure ... and that --base-config names the CLIPSeg it was trained on.": "The authors' .pt is converted",
        "Use it directly (--base or --checkpoint take the folder), or fine-tune it.": "Choose it as the model directly",
        "Import its best weights: `tgated models import runs/x/best`.": "Choose a checkpoint folder",
        "Use 1-64 characters (e.g. --name liver-ct-v1).": "Choose a checkpoint folder",
    }
    for hint, words in hints.items():
        assert glue.importHint(hint).startswith(words), hint
    for kept in ("The file is damaged: copy it again.", None, ""):
        assert glue.importHint(kept) == kept
    error = glue.importError(glue.BackendError("m", "Pass --config X.", "Command: c", "InputError", 2))
    assert (error.message, error.kind, error.returncode) == ("m", "InputError", 2)
    assert error.details == "Backend's hint: Pass --config X.\n\nCommand: c"
    accepted = glue.importHint(
        "Pass a checkpoint folder, a .zip from `tgated models export`, a .safetensors file "
        "(with --config) or the authors' .pt/.pth."
    )
    assert accepted.startswith("Choose a checkpoint folder")
    same = glue.importError(glue.BackendError("m", "Copy it again.", "d"))
    assert (same.hint, same.details) == ("Copy it again.", "d")


def test_run_backend_command_returns_the_done_event_or_a_plain_error(fake_logic, monkeypatch):
    done = fake_logic.runBackendCommand(["devices", "--progress", "json"])
    assert done["event"] == "done" and done["devices"][0]["id"] == "cpu"
    monkeypatch.setenv("FAKE_BACKEND_FAIL", "error")
    with pytest.raises(glue.BackendError) as info:
        fake_logic.runBackendCommand(["devices", "--progress", "json"], what="The import")
    assert info.value.message == "The import cannot use this input: the volume is constant"
    assert info.value.hint == "Pick another." and "devices --progress json" in info.value.details


# --------------------------------------------------------------------------------------------------
# No trained model: the note, its link, the card area


def test_with_no_model_chosen_the_panel_says_no_weights_are_published_and_links_to_the_docs(
    tmp_path, monkeypatch, slicer_tmp
):
    logic = TGatedSegment.TGatedSegmentLogic()
    docs = REPO / "docs" / "slicer.md"
    url = logic.modelHelpUrl()
    assert url == docs.resolve().as_uri()  # this source checkout's own docs/slicer.md
    assert "## Getting a model" in docs.read_text(encoding="utf-8")
    note = glue.modelNoteHtml(logic.modelNote(""), url)
    assert note.startswith("No trained model chosen: the authors of T-Gated publish no trained weights")
    assert note.endswith(f' <a href="{url}">How to get a model</a>') and "Import model..." in note
    details = logic.modelDetails("")
    assert details.startswith(glue.noTrainedModelNote()) and details.endswith(f"[How to get a model]({url})")
    assert "Import model..." in details and "logic.train" in details

    # A built extension: no docs beside it; the link is its homepage, docs/slicer.md in its repository.
    monkeypatch.setattr(TGatedSegment.TGatedSegmentLogic, "backendLibraryParent", staticmethod(lambda: str(tmp_path)))
    assert logic.modelHelpUrl() == ""  # no public repository: no link (the note still names docs/slicer.md)
    assert glue.modelNoteHtml("a & <b>", "") == "a &amp; &lt;b&gt;"
    homepage = "https://github.com/someone/SlicerTGatedSegment/blob/main/docs/slicer.md"
    slicer.app.extensionsManagerModel().installed["TGatedSegment"] = {"homepage": homepage}
    assert logic.modelHelpUrl() == homepage + "#getting-a-model"
    assert glue.modelHelpUrl(None, "https://example.org/tgated") == "https://example.org/tgated"
    assert glue.modelHelpUrl(None, "not a url") == ""


def test_the_card_area_for_folders_hub_ids_and_paths_not_found(home, tiny_checkpoint, tmp_path):
    folder = glue.modelDetails(str(tiny_checkpoint))
    assert folder.startswith("**Checkpoint folder: T-Gated (reads 5 neighbouring slices), untrained")
    assert "# tiny-tgated" in folder and "library_name" not in folder and "## Measured Dice" in folder
    assert glue.modelDetails("someone/tgated-flare22").startswith("Hugging Face Hub model 'someone/tgated-flare22'")
    missing = glue.modelDetails("runs/x/best", [str(tmp_path)], "https://x.org/docs")
    assert missing.startswith("Not found") and missing.endswith("[How to get a model](https://x.org/docs)")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clipseg"}))
    assert glue.modelDetails(str(tmp_path)) == "A plain CLIPSeg model folder: zero-shot, no organ training."
    assert glue.displayCard("---\na: 1\n---\n\n# x\n\ntext\n") == "# x\n\ntext\n"
    assert glue.displayCard("# no front matter\n---\n") == "# no front matter\n---\n"


# --------------------------------------------------------------------------------------------------
# Translation and the widget's wiring


def test_the_new_texts_go_through_slicers_translation(monkeypatch, home, tiny_checkpoint):
    asked = []

    def translate(context, text):
        asked.append(context)
        return "[fr] " + text

    monkeypatch.setattr(slicer.app, "translate", translate)
    assert glue.modelDetails("").count("[fr] ") >= 4 and "TGatedSegmentGlue.models" in asked
    assert glue.modelNoteHtml("n", "u").endswith(">[fr] How to get a model</a>")
    assert glue.importHint("Pass --config X.").startswith("[fr] Put the config.json")
    with pytest.raises(ValueError, match=r"^\[fr\] 'a b' cannot be a model name"):
        glue.checkedModelName("a b")
    assert "TGatedSegmentGlue.modelstore" in asked
    logic = TGatedSegment.TGatedSegmentLogic()
    with pytest.raises(ValueError, match=r"^\[fr\] "):
        logic.importModel("")
    assert asked[-1] == "TGatedSegment"


def test_the_widget_imports_through_the_logic_and_selects_the_model():
    """The panel's Import model... (never run outside Slicer): a file or folder dialog, then the
    logic's importModel asking before it replaces a model, then the model chosen in the parameter node."""
    source = (MODULE / "TGatedSegment.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TGatedSegmentWidget")
    text = ast.get_source_segment(source, widget)
    assert "self.ui.importModelButton.setMenu(importMenu)" in text
    assert "glue.IMPORT_FILE_FILTER" in text and "getExistingDirectory" in text
    assert "self.logic.importModel(path, dialog.textValue, ask=True)" in text
    assert "self._parameterNode.checkpoint = name" in text and "self._fillModels()" in text
    assert "self.logic.modelChoices()" in text and "setMarkdown(self.logic.modelDetails(" in text
    assert "runBackendCommand" not in text and "confirmYesNoDisplay" not in text  # the logic's, not the widget's
    methods = {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}
    assert {"onImportModelFile", "onImportModelFolder", "importModel", "onModelChosen", "_fillModels"} <= methods
