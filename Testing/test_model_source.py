"""``model.source.classify_source``: one typed answer for every kind of model argument, and the
old import paths of moved names still working (with a DeprecationWarning)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from TGatedSegmentLib.model.source import SourceKind, classify_source, looks_like_hub_id


def test_every_kind_of_source(tmp_path):
    ckpt, clipseg, empty = tmp_path / "ckpt", tmp_path / "clipseg", tmp_path / "empty"
    for folder in (ckpt, clipseg, empty):
        folder.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"format": "tgated-segment"}))
    (clipseg / "config.json").write_text(json.dumps({"model_type": "clipseg"}))
    config = tmp_path / "arch.json"
    config.write_text("{}")
    cases = {
        str(ckpt): SourceKind.CHECKPOINT,
        str(clipseg): SourceKind.CLIPSEG,
        str(empty): SourceKind.FOLDER,
        str(config): SourceKind.CONFIG_FILE,
        "builtin:tiny": SourceKind.BUILTIN,
        "CIDAS/clipseg-rd64-refined": SourceKind.HUB_ID,
        str(tmp_path / "nope"): SourceKind.MISSING,
        "./a/b": SourceKind.MISSING,
    }
    for text, kind in cases.items():
        source = classify_source(text)
        assert source.kind is kind, text
        assert source.text == text
        assert source.is_local == (source.path is not None)
    assert classify_source(config).random_weights and classify_source("builtin:cpu").random_weights
    assert not classify_source(ckpt).random_weights and classify_source(ckpt).is_folder


def test_a_local_folder_wins_over_the_hub_pattern(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert looks_like_hub_id("owner/name")
    assert classify_source("owner/name").kind is SourceKind.FOLDER


def test_hub_rule_matches_the_slicer_glue():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "TGatedSegment"))
    try:
        glue = pytest.importorskip("TGatedSegmentGlue")
    finally:
        sys.path.pop(0)
    for text in ("a/b", "a/b/c", "./a", "~/a", "a\\b", "/a", "a/", "ab"):
        assert glue.looksLikeHubId(text) == looks_like_hub_id(text), text


@pytest.mark.parametrize(
    "old, name",
    [
        ("TGatedSegmentLib.training.dataset", "load_dataset"),
        ("TGatedSegmentLib.training.trainer", "parameter_group"),
        ("TGatedSegmentLib.model.checkpoint", "convert_reference_state_dict"),
        ("TGatedSegmentLib.model.checkpoint", "_looks_like_hub_id"),
        ("TGatedSegmentLib.cli.common", "refuse_existing_output"),
        ("TGatedSegmentLib.data.modality", "modality_hint"),
        ("TGatedSegmentLib.preprocessing.intensity", "check_modality"),
        ("TGatedSegmentLib.evaluation.evaluate", "jsonable"),
    ],
)
def test_moved_names_import_with_a_deprecation_warning(old, name):
    code = (
        f"import warnings; warnings.simplefilter('error')\n"
        f"try:\n    from {old} import {name}\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, encoding="utf-8", check=True)
    assert out.stdout.startswith("warned:") and "moved to" in out.stdout
    with pytest.warns(DeprecationWarning):
        module = __import__(old, fromlist=[name])
        assert callable(getattr(module, name))
