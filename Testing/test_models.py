"""Models that travel (in process): the model folder and its environment variable, names through the
one source classifier, import of every kind of source, export, round trips with bit-identical
weights, refusal to overwrite, and the model card's facts."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from TGatedSegmentLib.errors import CheckpointError, InputError, OutputError
from TGatedSegmentLib.model import store
from TGatedSegmentLib.model.card import model_facts, render_card
from TGatedSegmentLib.model.checkpoint import load_model, save_checkpoint
from TGatedSegmentLib.model.exporter import export_model
from TGatedSegmentLib.model.importer import import_model
from TGatedSegmentLib.model.source import SourceKind, classify_source


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A fresh model folder for one test."""
    monkeypatch.setenv(store.ENV_HOME, str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- where models live, and their names --------------------------------------------------------------


def test_the_folder_follows_tgated_home_else_the_platform_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TGATED_HOME", str(tmp_path / "lab"))
    assert store.models_dir() == tmp_path / "lab" / "models"
    monkeypatch.setenv("TGATED_HOME", "~/x")
    assert store.models_dir() == Path.home() / "x" / "models"
    monkeypatch.delenv("TGATED_HOME")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert store.models_dir() == tmp_path / "xdg" / "tgated-segment" / "models"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert store.models_dir() == Path.home() / ".cache" / "tgated-segment" / "models"


def test_names_are_checked_and_derived():
    assert store.check_name("Liver-CT_v1.2") == "liver-ct_v1.2"
    for bad in ("", "a/b", ".hidden", "-x", "x" * 65, "liver.old", "a b"):
        with pytest.raises(InputError, match="cannot be a model name"):
            store.check_name(bad)
    assert store.name_from("Liver CT (v2).zip") == "liver-ct-v2"
    assert store.name_from("/runs/x/temporal_adapter_BEST.pth") == "temporal_adapter_best"
    assert store.name_from("???.zip") == "model"


# --- import, export, round trips -----------------------------------------------------------------------


def test_round_trip_through_a_zip_keeps_the_weights_bit_identical(home, tiny_checkpoint, tmp_path):
    folder = import_model(tiny_checkpoint, name="Tiny-A")
    assert folder == home / "tiny-a" and store.model_names() == ["tiny-a"]
    assert digest(folder / "model.safetensors") == digest(tiny_checkpoint / "model.safetensors")
    zipped = export_model("tiny-a", tmp_path / "out" / "tiny.zip")
    with zipfile.ZipFile(zipped) as zf:
        names = set(zf.namelist())
    assert {"tiny-a/config.json", "tiny-a/model.safetensors", "tiny-a/tokenizer.json", "tiny-a/README.md"} <= names
    again = export_model("tiny-a", tmp_path / "again.zip")
    assert again.read_bytes() == zipped.read_bytes()  # reproducible archives
    back = import_model(zipped, name="tiny-b")
    assert digest(back / "model.safetensors") == digest(tiny_checkpoint / "model.safetensors")
    assert import_model(zipped, overwrite=True).name == "tiny-a"  # default name: the one it was exported under
    a, b = load_model("tiny-a").model.state_dict(), load_model(tiny_checkpoint).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(home.glob(".*"))  # no temporary folder left behind


def test_existing_models_and_zips_are_never_replaced_unless_asked(
    home, tiny_checkpoint, tiny_baseline_checkpoint, tmp_path
):
    import_model(tiny_checkpoint, name="m")
    before = digest(home / "m" / "model.safetensors")
    with pytest.raises(OutputError, match="already imported") as err:
        import_model(tiny_baseline_checkpoint, name="m")
    assert "--overwrite" in err.value.hint
    broken = tmp_path / "broken"
    shutil.copytree(tiny_baseline_checkpoint, broken)
    save_file({"other": torch.zeros(2)}, str(broken / "model.safetensors"))  # readable, but not this model's
    with pytest.raises(CheckpointError, match="cannot be imported: the weights in '.*broken' do not fit"):
        import_model(broken, name="m", overwrite=True)
    assert digest(home / "m" / "model.safetensors") == before and not list(home.glob(".*"))
    import_model(tiny_baseline_checkpoint, name="m", overwrite=True)
    assert not load_model("m").model.temporal
    out = tmp_path / "m.zip"
    out.write_bytes(b"mine")
    with pytest.raises(OutputError, match="already exists"):
        export_model("m", out)
    assert out.read_bytes() == b"mine"


def test_a_bare_safetensors_file_needs_its_config(home, tiny_checkpoint, tmp_path):
    bare = tmp_path / "weights.safetensors"
    shutil.copyfile(tiny_checkpoint / "model.safetensors", bare)
    with pytest.raises(InputError, match="bare weights file") as err:
        import_model(bare)
    assert "--config" in err.value.hint
    folder = import_model(bare, config=tiny_checkpoint / "config.json", tokenizer="compact")
    assert folder.name == "weights" and digest(folder / "model.safetensors") == digest(bare)
    ids = load_model("weights").tokenizer("left kidney")["input_ids"]
    assert ids == load_model(tiny_checkpoint).tokenizer("left kidney")["input_ids"]
    beside = tmp_path / "beside"
    shutil.copytree(tiny_checkpoint, beside)
    (beside / "model.safetensors").rename(beside / "tiny.safetensors")
    assert import_model(beside / "tiny.safetensors").name == "tiny"  # config and tokenizer taken from beside it


def test_the_authors_checkpoint_is_converted_on_import(home, tiny_reference_checkpoint, tiny_config_file, tmp_path):
    ours = load_model(tiny_reference_checkpoint).model.state_dict()
    theirs = {k.removeprefix("adapter."): v for k, v in ours.items()}  # their layout: adapter keys at the top
    weights = tmp_path / "temporal_adapter_BEST.pth"
    torch.save({"epoch": 3, "model_state_dict": theirs}, weights)
    folder = import_model(weights, base_config=str(tiny_config_file), tokenizer=str(tiny_reference_checkpoint))
    assert folder.name == "temporal_adapter_best"
    loaded = load_model(folder.name)
    assert loaded.config.adapter.mode == "reference"
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], ours[k]) for k in ours)
    assert model_facts(folder)["recipe"] == "imported"


def test_a_partial_checkpoint_is_imported_with_all_its_weights(home, tiny_checkpoint, tmp_path):
    loaded = load_model(tiny_checkpoint)
    loaded.config.base_model_id = str(tiny_checkpoint)
    trained = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("base_model.")}
    partial = save_checkpoint(
        loaded.model, loaded.tokenizer, tmp_path / "partial", loaded.config, state_dict=trained, partial_weights=True
    )
    folder = import_model(partial, name="whole")
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["partial_weights"] is False
    assert model_facts(folder)["parameters"] == sum(v.numel() for v in loaded.model.state_dict().values())


def test_sources_that_are_not_models_are_refused_with_the_fix(home, tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "best")
    with pytest.raises(InputError, match="is a training run") as err:
        import_model(run)
    assert "run/best" in err.value.hint
    assert import_model(run / "best").name == "run-best"
    with pytest.raises(InputError, match="tgated models pull"):
        import_model("owner/repo")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a kind of model file"):
        import_model(tmp_path / "notes.txt")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="as a zip"):
        import_model(tmp_path / "bad.zip", name="bad")


# --- a name wherever a checkpoint is accepted ------------------------------------------------------------


def test_a_name_is_a_checkpoint_for_the_classifier_loaders_and_segmenter(home, tiny_checkpoint, tmp_path, monkeypatch):
    import SimpleITK as sitk

    from TGatedSegmentLib.demo import check_base
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.training.preflight import _check_base, read_base_info

    import_model(tiny_checkpoint, name="liver-v1")
    source = classify_source("Liver-V1")
    assert source.kind is SourceKind.STORED and source.path == home / "liver-v1" and source.is_checkpoint
    assert read_base_info("liver-v1") is not None
    _check_base(SimpleNamespace(resume=None, base="liver-v1", tokenizer=None))  # tgated train --base NAME
    check_base("liver-v1")  # tgated demo --base NAME
    volume = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=(4, 24, 24)).astype(np.float32))
    by_name = Segmenter("liver-v1", device="cpu").segment(volume, prompts="liver", modality="mr")
    by_path = Segmenter(str(tiny_checkpoint), device="cpu").segment(volume, prompts="liver", modality="mr")
    assert np.array_equal(by_name.labelmap, by_path.labelmap)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "liver-v1").mkdir()  # a local folder of that name wins over the model folder
    assert classify_source("liver-v1").kind is SourceKind.FOLDER
    with pytest.raises(CheckpointError, match="neither a folder here nor a model imported") as err:
        load_model("liver-v2")
    assert "liver-v1" in err.value.hint and "tgated models import" in err.value.hint


# --- the card's facts ----------------------------------------------------------------------------------------


def test_the_card_shows_the_validation_dice_of_the_selected_weights(home, tiny_checkpoint):
    folder = import_model(tiny_checkpoint, name="trained")
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    raw["training"] = {
        "producer": "tgated train",
        "selected": "best",
        "recipe": "cpu",
        "base": "builtin:cpu",
        "data": {"train": "/data/Dataset001", "train_cases": ["a", "b"], "val": "split:1 of /data"},
        "step": 750,
        "epochs_completed": 3,
        "seconds": 211.0,
        "best": {"step": 500, "epoch": 2},
        "history": [
            {"step": 250, "val_mean_dice": 0.5, "val_dice": {"liver": 0.5}, "val_cases": 1},
            {"step": 500, "val_mean_dice": 0.8, "val_dice": {"liver": 0.9, "spleen": 0.7}, "val_cases": 1},
            {"step": 750, "val_mean_dice": 0.7, "val_dice": {"liver": 0.7}, "val_cases": 1},
        ],
    }
    (folder / "config.json").write_text(json.dumps(raw))
    facts = model_facts(folder)
    assert facts["dice"]["kind"] == "validation" and facts["dice"]["mean"] == 0.8 and facts["recipe"] == "cpu"
    card = render_card(facts)
    for text in (
        "| liver | 0.900 |",
        "| **mean** | **0.800** |",
        "Recipe: `cpu`",
        "/data/Dataset001",
        "Parameters: ",
        "No licence is granted",
        "--checkpoint trained",
    ):
        assert text in card, text


def test_an_attached_evaluation_replaces_the_validation_figure(home, tiny_checkpoint, tmp_path):
    from TGatedSegmentLib.evaluation.evaluate import EvaluationReport

    report = EvaluationReport(["tiny"], {"tiny": str(tiny_checkpoint)}, dataset="/data/test")
    report.rows = [
        {"checkpoint": "tiny", "case": c, "organ": "liver", "status": "ok", "dice": d, "nsd": d, "hd95": 3.0}
        for c, d in (("a", 0.8), ("b", 0.6))
    ]
    report.write(tmp_path / "report", chart=False)
    folder = import_model(tiny_checkpoint, name="evaluated", evaluation=tmp_path / "report")
    facts = model_facts(folder)
    assert facts["dice"]["kind"] == "evaluation" and facts["dice"]["cases"] == 2
    assert "| liver | 0.700 ± 0.100 | 2 |" in render_card(facts)
