"""``tgated models`` through real subprocesses: import/list/export/import a zip, a NAME as
``--checkpoint``, the offline messages of push and pull, and the Slicer glue sharing the folder."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import REPO, run_cli

if str(REPO / "TGatedSegment") not in sys.path:
    sys.path.insert(0, str(REPO / "TGatedSegment"))


def run_models_cli(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=300, TGATED_HOME=str(home), **env)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_list_export_and_segment_with_a_name(tmp_path, tiny_checkpoint):
    home = tmp_path / "home"
    proc = run_models_cli("models", "import", str(tiny_checkpoint), "--name", "liver-v1", home=home)
    assert proc.returncode == 0, proc.stderr
    assert (home / "models" / "liver-v1" / "config.json").is_file()  # the folder TGATED_HOME names
    again = run_models_cli("models", "import", str(tiny_checkpoint), "--name", "liver-v1", home=home)
    assert again.returncode == 2 and "already imported" in again.stderr and "--overwrite" in again.stderr

    listed = run_models_cli("models", "list", "--json", home=home)
    payload = json.loads(listed.stdout)
    assert payload["folder"] == str(home / "models")
    (model,) = payload["models"]
    assert model["name"] == "liver-v1" and model["architecture_short"].startswith("T-Gated residual")
    assert model["parameters"] > 1_000_000 and model["size_bytes"] > 0 and model["dice"] is None
    table = run_models_cli("models", "list", home=home)
    assert "liver-v1" in table.stdout and "NAME" in table.stdout

    zipped = tmp_path / "liver.zip"
    assert run_models_cli("models", "export", "liver-v1", "-o", str(zipped), home=home).returncode == 0
    other = tmp_path / "other-home"
    proc = run_models_cli("models", "import", str(zipped), "--json", home=other)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["model"]["name"] == "liver-v1"
    assert digest(other / "models" / "liver-v1" / "model.safetensors") == digest(tiny_checkpoint / "model.safetensors")

    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(
        sitk.GetImageFromArray(np.random.default_rng(0).normal(40, 20, (4, 24, 24)).astype(np.float32)), str(ct)
    )
    proc = run_models_cli(
        "segment",
        str(ct),
        "--prompts",
        "liver",
        "--checkpoint",
        "liver-v1",
        "-o",
        str(tmp_path / "s.seg.nrrd"),
        "--progress",
        "none",
        home=other,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.seg.nrrd").is_file()
    missing = run_models_cli(
        "segment",
        str(ct),
        "--prompts",
        "liver",
        "--checkpoint",
        "liver-v2",
        "-o",
        str(tmp_path / "t.seg.nrrd"),
        "--progress",
        "none",
        home=other,
    )
    assert missing.returncode == 2 and "Imported models: liver-v1" in missing.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"HF_HUB_OFFLINE": "1"},
        # a refused connection on this machine's loopback: what "no network" looks like
        {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["offline-mode", "connection-refused"],
)
def test_push_and_pull_without_network_say_how_to_move_a_zip(tmp_path, tiny_checkpoint, env):
    home = tmp_path / "home"
    assert run_models_cli("models", "import", str(tiny_checkpoint), "--name", "m", home=home).returncode == 0
    pull = run_models_cli("models", "pull", "lab/liver-ct", home=home, **env)
    assert pull.returncode == 2, pull.stderr
    assert "no network" in pull.stderr and "tgated models import liver-ct.zip" in pull.stderr
    assert "Traceback" not in pull.stderr and not (home / "models" / "liver-ct").exists()
    push = run_models_cli("models", "push", "m", "lab/liver-ct", home=home, **env)
    assert push.returncode == 2, push.stderr
    assert "no network" in push.stderr and "tgated models export m -o m.zip" in push.stderr


def test_the_slicer_glue_sees_the_same_folder_and_imports_through_the_backend(tmp_path, tiny_checkpoint, monkeypatch):
    from TGatedSegmentGlue import modelstore as glue_models

    home = tmp_path / "shared-home"
    monkeypatch.setenv("TGATED_HOME", str(home))
    assert glue_models.listModels() == [] and glue_models.modelsFolder() == str(home / "models")
    assert run_models_cli("models", "import", str(tiny_checkpoint), "--name", "from-shell", home=home).returncode == 0
    assert [m["name"] for m in glue_models.listModels()] == ["from-shell"]

    def run_backend(args):  # what the module's logic.runBackendCommand does, without Slicer
        proc = run_models_cli(*args, home=home)
        if proc.returncode:
            raise RuntimeError(proc.stderr)
        return proc.stdout.splitlines()

    assert glue_models.suggestedName(tiny_checkpoint) == "tiny-tgated"
    facts = glue_models.importModel(run_backend, tiny_checkpoint)
    assert facts["name"] == "tiny-tgated" and glue_models.nameTaken("Tiny-TGated")
    assert [name for name, _ in glue_models.modelChoices()] == ["from-shell", "tiny-tgated"]
    assert glue_models.isImportedModel("tiny-tgated") and not glue_models.isImportedModel("nope")
    assert "Imported model 'tiny-tgated'" in glue_models.importedModelNote("tiny-tgated")
    assert glue_models.importedModelNote(str(tiny_checkpoint)) is None
    assert glue_models.modelCard("from-shell").startswith("---\nlibrary_name: tgated-segment")
    with pytest.raises(RuntimeError, match="already imported"):
        glue_models.importModel(run_backend, tiny_checkpoint)


def test_the_glue_module_and_the_card_import_no_torch():
    code = (
        "import sys; sys.path.insert(0, 'TGatedSegment'); import TGatedSegmentGlue.modelstore; "
        "import TGatedSegmentLib.model.card, TGatedSegmentLib.model.store; "
        "print(sorted({'torch', 'transformers', 'SimpleITK'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "[]"
