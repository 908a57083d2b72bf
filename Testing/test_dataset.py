"""Dataset discovery and validation on tiny synthetic datasets (16x16x8) and the real abdomen sample."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TGatedSegmentLib.data.checks import validate_label_values
from TGatedSegmentLib.data.dataset import Case, Dataset, load_dataset
from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.training.dataset import split_dataset
from TGatedSegmentLib.vocabulary import ABDOMEN13

LABELS = {"background": 0, "liver": 1, "kidney_left": 2}


def write_volume(
    path: Path,
    values: int | np.ndarray = 0,
    spacing=(1.0, 1.0, 2.5),
    origin=(0.0, 0.0, 0.0),
    direction=None,
    dtype=np.uint8,
) -> Path:
    array = np.full((8, 16, 16), values, dtype=dtype) if np.isscalar(values) else values.astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def label_array(*ids: int) -> np.ndarray:
    array = np.zeros((8, 16, 16), np.uint8)
    for n, label_id in enumerate(ids):
        array[2:4, 2 + 3 * n : 4 + 3 * n, 2:6] = label_id
    return array


def make_nnunet(
    root: Path, cases=("a", "b", "c"), labels=None, ending=".nii.gz", channel_suffix="_0000", meta: dict | None = None
) -> Path:
    labels = LABELS if labels is None else labels
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        write_volume(root / "imagesTr" / f"{case}{channel_suffix}{ending}", 100, dtype=np.int16)
        write_volume(root / "labelsTr" / f"{case}{ending}", label_array(1, 2))
    meta = {
        "name": "tiny",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ending,
        **(meta or {}),
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def error(path, match: str, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        load_dataset(path, **kwargs)
    assert info.value.hint, "every InputError says how to fix it"
    return info.value


# --------------------------------------------------------------------------- layouts


def test_nnunet_layout(tmp_path):
    root = make_nnunet(
        tmp_path / "ds", cases=("b", "a", "c"), meta={"cases": {"a": {"annotated": [1], "modality": "MR"}}}
    )
    ds = load_dataset(root)
    assert isinstance(ds, Dataset) and ds.layout == "nnunet"
    assert ds.case_ids == ["a", "b", "c"]
    a = ds.cases[0]
    assert isinstance(a, Case)
    assert a.image == root / "imagesTr" / "a_0000.nii.gz" and a.label == root / "labelsTr" / "a.nii.gz"
    assert a.annotated == (1,) and a.modality == "MR"
    assert ds.cases[1].annotated is None and ds.cases[1].modality == "CT"  # channel_names hint
    assert ds.scored_ids(a) == (1,) and ds.scored_ids(ds.cases[1]) == (1, 2)
    assert ds.label_names == {1: "liver", 2: "kidney_left"}
    assert ds.organs[2].prompt == "left kidney" and ds.organs[2].lateral == "left"
    assert load_dataset(root / "dataset.json").case_ids == ds.case_ids  # the json itself is accepted
    assert validate_label_values(ds) == {"a": (1, 2), "b": (1, 2), "c": (1, 2)}


def test_decathlon_labels_and_file_names(tmp_path):
    root = make_nnunet(tmp_path / "Task09_Spleen", labels={"0": "background", "1": "spleen"}, channel_suffix="")
    (root / "imagesTr" / "._a.nii.gz").write_bytes(b"\0macOS fork")  # shipped in the Decathlon tarballs
    ds = load_dataset(root)
    assert ds.label_names == {1: "spleen"}
    assert ds.cases[0].image.name == "a.nii.gz"
    assert ds.organs[1] == next(o for o in ABDOMEN13 if o.name == "spleen")


@pytest.mark.parametrize("ending", [".nrrd", ".mha"])
def test_file_ending_from_dataset_json(tmp_path, ending):
    ds = load_dataset(make_nnunet(tmp_path / "ds", ending=ending))
    assert [c.image.name for c in ds.cases] == [f"a_0000{ending}", f"b_0000{ending}", f"c_0000{ending}"]


def test_extra_channels_are_ignored_with_a_warning(tmp_path, caplog):
    root = make_nnunet(tmp_path / "ds")
    write_volume(root / "imagesTr" / "a_0001.nii.gz", 5)
    with caplog.at_level(logging.WARNING, logger="TGatedSegmentLib.data"):
        ds = load_dataset(root)
    assert len(ds.cases) == 3 and "a_0001.nii.gz" in caplog.text


def test_plain_pairs_with_labels_json(tmp_path):
    root = tmp_path / "pairs"
    for case in ("p1", "p2"):
        write_volume(root / f"{case}_image.nii.gz", 7, dtype=np.int16)
        write_volume(root / f"{case}_label.nii.gz", label_array(1))
    (root / "labels.json").write_text(json.dumps({"liver": 1, "RK": 2}))
    ds = load_dataset(root)
    assert ds.layout == "pairs" and ds.case_ids == ["p1", "p2"]
    assert ds.cases[0].label.name == "p1_label.nii.gz" and ds.cases[0].annotated is None
    assert ds.organs[2].prompt == "right kidney"
    assert ds.label_file == root / "labels.json"


def test_plain_image_and_label_folders(tmp_path):
    root = tmp_path / "folders"
    for case in ("x", "y"):
        write_volume(root / "images" / f"{case}.nrrd", 7, dtype=np.int16)
        write_volume(root / "labels" / f"{case}.nii.gz", label_array(1))
    (root / "labels.json").write_text(json.dumps({"labels": {"inferior_vena_cava": 1}}))
    ds = load_dataset(root)
    assert ds.layout == "folders" and ds.case_ids == ["x", "y"]
    assert ds.organs[1].prompt == "inferior vena cava" and ds.organs[1].label == 6  # FLARE22 id kept


def test_unknown_names_are_prompted_verbatim_with_a_warning(tmp_path, caplog):
    root = make_nnunet(tmp_path / "ds", labels={"background": 0, "kidney_left": 1, "tumour_core": 2, "cyst_right": 3})
    with caplog.at_level(logging.WARNING, logger="TGatedSegmentLib.data"):
        ds = load_dataset(root)
    assert ds.organs[1].prompt == "left kidney"
    assert ds.organs[2].prompt == "tumour core" and ds.organs[2].label == 0 and ds.organs[2].lateral is None
    assert ds.organs[3].prompt == "cyst right" and ds.organs[3].lateral == "right"
    assert "tumour_core" in caplog.text and "cyst_right" in caplog.text and "kidney_left" not in caplog.text


# --------------------------------------------------------------------------- errors


def test_missing_folder_and_missing_dataset_json(tmp_path):
    error(tmp_path / "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    e = error(tmp_path / "empty", "no dataset.json")
    assert "imagesTr" in e.hint and "labels.json" in e.hint  # names the accepted layouts


@pytest.mark.parametrize("folder", ["imagesTr", "labelsTr"])
def test_missing_images_or_labels_folder(tmp_path, folder):
    root = make_nnunet(tmp_path / "ds")
    for f in (root / folder).iterdir():
        f.unlink()
    (root / folder).rmdir()
    error(root, f"no {folder}/ folder")


def test_image_without_label_and_label_without_image(tmp_path):
    root = make_nnunet(tmp_path / "ds")
    (root / "labelsTr" / "b.nii.gz").unlink()
    e = error(root, "case 'b' in .* has an image but no label")
    assert "labelsTr/b.nii.gz" in e.hint
    root = make_nnunet(tmp_path / "ds2")
    (root / "imagesTr" / "c_0000.nii.gz").unlink()
    error(root, "case 'c' in .* has a label but no image")


def test_empty_dataset(tmp_path):
    root = make_nnunet(tmp_path / "ds", cases=())
    error(root, "no cases")


def test_wrong_file_ending_is_explained(tmp_path):
    root = make_nnunet(tmp_path / "ds", ending=".nrrd")
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["file_ending"] = ".nii.gz"
    (root / "dataset.json").write_text(json.dumps(meta))
    e = error(root, r"no \.nii\.gz files .*found \.nrrd")
    assert "file_ending" in e.hint


def test_region_labels_are_rejected(tmp_path):
    root = make_nnunet(tmp_path / "ds", labels={"background": 0, "kidney": [1, 2], "tumour": 2})
    e = error(root, "'kidney' .* nnU-Net region")
    assert "one id per organ" in e.hint


def test_two_names_for_one_organ_are_rejected(tmp_path):
    error(
        make_nnunet(tmp_path / "ds", labels={"background": 0, "RK": 1, "right_kidney": 2}), "both mean 'right kidney'"
    )


def test_annotated_ids_must_be_labels(tmp_path):
    root = make_nnunet(tmp_path / "ds", meta={"cases": {"a": {"annotated": [1, 9]}}})
    error(root, "case 'a': 'annotated' .* 9")


def test_invalid_json(tmp_path):
    root = make_nnunet(tmp_path / "ds")
    (root / "dataset.json").write_text('{"labels": {"liver": 1,}}')
    error(root, "not valid JSON")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"spacing": (1.0, 1.0, 3.0)}, "case 'b': image spacing .* differs from label spacing"),
        ({"origin": (0.0, 0.5, 0.0)}, "case 'b': image origin .* differs from label origin"),
        ({"direction": (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)}, "case 'b': image direction"),
    ],
)
def test_geometry_mismatch_names_the_case(tmp_path, change, match):
    root = make_nnunet(tmp_path / "ds")
    write_volume(root / "labelsTr" / "b.nii.gz", label_array(1), **change)
    error(root, match)
    assert load_dataset(root, check_geometry=False).case_ids == ["a", "b", "c"]


def test_size_mismatch_and_small_differences(tmp_path):
    root = make_nnunet(tmp_path / "ds")
    write_volume(root / "labelsTr" / "a.nii.gz", np.zeros((8, 16, 15)))
    error(root, r"case 'a': image size \(16, 16, 8\) differs from label size \(15, 16, 8\)")
    write_volume(
        root / "labelsTr" / "a.nii.gz", label_array(1), spacing=(1.0, 1.0, 2.5000001), origin=(1e-5, 0.0, -2e-5)
    )  # float32 header noise is tolerated
    assert len(load_dataset(root).cases) == 3


def test_4d_image_and_unreadable_file(tmp_path):
    root = make_nnunet(tmp_path / "ds")
    four_d = sitk.JoinSeries([sitk.ReadImage(str(root / "imagesTr" / "a_0000.nii.gz"))] * 2)
    sitk.WriteImage(four_d, str(root / "imagesTr" / "a_0000.nii.gz"))
    error(root, "case 'a': the image is 4D")
    (root / "labelsTr" / "c.nii.gz").write_bytes(b"not an image")
    (root / "imagesTr" / "a_0000.nii.gz").unlink()
    write_volume(root / "imagesTr" / "a_0000.nii.gz")
    error(root, "case 'c': cannot read the label")


def test_geometry_check_reads_headers_only(tmp_path, monkeypatch):
    root = make_nnunet(tmp_path / "ds")

    def no_voxels(*args, **kwargs):
        raise AssertionError("load_dataset must not read voxels")

    monkeypatch.setattr(sitk, "ReadImage", no_voxels)
    assert len(load_dataset(root).cases) == 3


def test_undeclared_label_values_name_every_case(tmp_path):
    root = make_nnunet(tmp_path / "ds")
    write_volume(root / "labelsTr" / "a.nii.gz", label_array(1, 7))
    write_volume(root / "labelsTr" / "c.nii.gz", label_array(2, 9, 12))
    ds = load_dataset(root)
    with pytest.raises(InputError, match=r"case 'a' \(7\); case 'c' \(9, 12\)") as info:
        validate_label_values(ds)
    assert "dataset.json" in info.value.hint
    write_volume(root / "labelsTr" / "a.nii.gz", label_array(1).astype(np.float32) / 2, dtype=np.float32)
    write_volume(root / "labelsTr" / "c.nii.gz", label_array(1))
    with pytest.raises(InputError, match=r"case 'a' \(0\.5\)"):
        validate_label_values(ds)


# --------------------------------------------------------------------------- split


def _dataset(n: int) -> Dataset:
    cases = [Case(f"c{i:02d}", Path(f"i{i}"), Path(f"l{i}")) for i in reversed(range(n))]
    return Dataset(Path("."), cases, {1: "liver"}, {}, Path("labels.json"))


def test_split_is_seeded_and_stable():
    ds = _dataset(10)
    train, val = split_dataset(ds, 3, seed=0)
    assert len(val.cases) == 3 and len(train.cases) == 7
    assert sorted(train.case_ids + val.case_ids) == sorted(ds.case_ids)
    # Pinned: numpy's PCG64 permutation of the sorted ids; a change here changes every user's split.
    assert val.case_ids == ["c02", "c04", "c06"]
    assert split_dataset(ds, 3, seed=0)[1].case_ids == val.case_ids
    shuffled = Dataset(ds.root, list(reversed(ds.cases)), ds.label_names, ds.organs, ds.label_file)
    assert split_dataset(shuffled, 3, seed=0)[1].case_ids == val.case_ids  # input order does not matter
    assert {tuple(split_dataset(ds, 3, seed=s)[1].case_ids) for s in range(5)} != {tuple(val.case_ids)}
    assert split_dataset(ds, 0, seed=1)[1].cases == []


@pytest.mark.parametrize("n_val", [-1, 10, 11])
def test_split_rejects_impossible_sizes(n_val):
    with pytest.raises(InputError, match="validation case"):
        split_dataset(_dataset(10), n_val, seed=0)


# --------------------------------------------------------------------------- real data


def test_real_abdomen_sample(shared_data):
    root = shared_data / "abdomen-sample"
    if not root.is_dir():
        pytest.skip("abdomen-sample is not present")
    ds = load_dataset(root)
    assert len(ds.cases) == 5
    assert ds.case_ids == ["chaos_t2_01", "chaos_t2_02", "ts_ct", "ts_ct_sm", "ts_mr_sm"]
    assert {i: o.name for i, o in ds.organs.items()} == {o.label: o.name for o in ABDOMEN13}
    chaos = ds.cases[0]
    assert chaos.annotated == (1, 2, 3, 13) and chaos.modality.startswith("MR")
    present = validate_label_values(ds)
    assert present["chaos_t2_01"] == (1, 2, 3, 13)
    assert 10 not in present["ts_ct"]  # esophagus annotated but absent: scored as both_empty, not missed


def test_several_unpaired_cases_are_all_named(tmp_path):
    root = make_nnunet(tmp_path / "ds", cases=("a", "b", "c", "d"))
    (root / "labelsTr" / "b.nii.gz").unlink()
    (root / "labelsTr" / "d.nii.gz").unlink()
    e = error(root, "cases 'b', 'd' in .* have an image but no label")
    assert "labelsTr/CASE.nii.gz" in e.hint


def test_modules_import_without_torch_or_simpleitk():
    import subprocess
    import sys

    code = (
        "import sys, TGatedSegmentLib.training.dataset, TGatedSegmentLib.data.dataset, TGatedSegmentLib.data.checks, "
        "TGatedSegmentLib.data.modality, TGatedSegmentLib.evaluation.metrics; "
        "print(sorted({'torch', 'SimpleITK'} & set(sys.modules)))"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "[]"


def test_plain_layout_errors(tmp_path):
    root = tmp_path / "pairs"
    write_volume(root / "p1_image.nii.gz")
    write_volume(root / "p1_label.nii.gz")
    write_volume(root / "p2_image.nii.gz")
    error(root, "no dataset.json")  # labels.json missing too
    (root / "labels.json").write_text(json.dumps({"liver": 1}))
    e = error(root, "case 'p2' in .* has an image but no label")
    assert "p2_label.nii.gz" in e.hint
    (root / "images").mkdir()
    error(root, "has images/ but no labels/ folder")
