"""`tgated prepare`: each public dataset layout, built tiny and synthetic in tmp_path, converted and read
back through the project's own dataset reader; the vocabulary covering every class; bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.env import backend_command, python_env
from PIL import Image

from TGatedSegmentLib.data.checks import validate_label_values
from TGatedSegmentLib.data.converters import amos22, btcv, chaos, flare22, prepare, totalsegmentator
from TGatedSegmentLib.data.dataset import load_dataset
from TGatedSegmentLib.errors import Cancelled, InputError, OutputError
from TGatedSegmentLib.progress import CancelToken, Progress
from TGatedSegmentLib.vocabulary import ABDOMEN13, EXTENDED, lookup

SHAPE = (8, 16, 16)  # (k, j, i)


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.5), origin=(0.0, 0.0, 0.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), True)
    return path


def ct(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, SHAPE).astype(np.int16)


def labelmap(values: list[int]) -> np.ndarray:
    """One block per value, in distinct slices, so that each id's voxels are known."""
    label = np.zeros(SHAPE, np.uint8)
    for n, value in enumerate(values):
        label[n % SHAPE[0], 2 + n : 5 + n, 3:9] = value
    return label


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def meta(out: Path) -> dict:
    return json.loads((out / "dataset.json").read_text(encoding="utf-8"))


def check_readable(out: Path) -> dict:
    """The output reads through the trainer's own loader, with the declared ids and every label resolved."""
    dataset = load_dataset(out)
    validate_label_values(dataset)
    for label_id, organ in dataset.organs.items():
        assert lookup(dataset.label_names[label_id]) is not None, dataset.label_names[label_id]
    return {c.case_id: c for c in dataset.cases}


# --------------------------------------------------------------------------- vocabulary


def test_vocabulary_resolves_every_class_of_every_dataset():
    tables = {
        "amos22": amos22.LABELS,
        "flare22": flare22.LABELS,
        "btcv": btcv.LABELS,
        "chaos": [(v, n, w) for v, n, w, _ in chaos.ORGANS],
    }
    for release, names in totalsegmentator.CLASS_MAPS.items():
        tables[f"ts-{release}"] = [(i + 1, n, n) for i, n in enumerate(names)]
    for dataset, rows in tables.items():
        organs = [lookup(vocabulary_name) for _, _, vocabulary_name in rows]
        assert all(organs), dataset
        assert len({o.name for o in organs}) == len(rows), f"{dataset}: two labels mean one organ"
        for (_, source_name, _), organ in zip(rows, organs):  # the dataset's own spelling resolves too
            assert lookup(source_name) == organ or dataset in ("amos22", "btcv", "chaos"), source_name
    assert len(totalsegmentator.CLASS_MAPS["v2"]) == 117
    missing = [n for n in totalsegmentator.CLASS_MAPS["v2"] if lookup(n).snomed_type is None]
    assert missing == []  # every TotalSegmentator class has a SNOMED CT code
    assert [o.name for o in EXTENDED if o.snomed_type is None] == ["prostate_or_uterus"]


def test_vocabulary_keeps_the_abdomen13_entries():
    for organ in ABDOMEN13:
        assert lookup(organ.name) is organ and lookup(organ.prompt) is organ
    assert lookup("kidney_left") is ABDOMEN13[12] and lookup("postcava").name == "inferior_vena_cava"
    assert lookup("liver lesion") is None
    liver = lookup("liver").to_dict()
    assert "snomed_category" not in liver and "snomed_region" not in liver  # serialised form unchanged


def test_extended_terminology():
    rib = lookup("rib_right_3")
    assert (rib.prompt, rib.lateral, rib.color) == ("right third rib", "right", None)
    assert rib.terminology().split("~")[2:4] == ["SCT^25888004^Third rib", "SCT^24028007^Right"]
    cyst = lookup("kidney_cyst_left").terminology().split("~")
    assert cyst[1] == "SCT^49755003^Morphologically Altered Structure" and cyst[2] == "SCT^367643001^Cyst"
    assert cyst[3] == "^^" and cyst[5:] == ["SCT^64033007^Kidney", "SCT^7771000^Left"]
    middle = lookup("lung_middle_lobe_right")  # the side is in the code's meaning: no modifier
    assert middle.lateral is None and middle.terminology().split("~")[3] == "^^"
    assert lookup("vertebrae_L5").prompt == "L5 vertebra" and lookup("bladder").name == "urinary_bladder"


# --------------------------------------------------------------------------- TotalSegmentator


def make_totalsegmentator(root: Path) -> Path:
    masks = {"liver": 1, "kidney_left": 2, "rib_left_1": 3}
    for n, case in enumerate(["s0000", "s0001", "s0002"]):
        write_volume(root / case / "ct.nii.gz", ct(n))
        label = labelmap([1, 2, 3])
        for name, value in masks.items():
            if case == "s0001" and name == "rib_left_1":
                continue  # not annotated in this case
            write_volume(root / case / "segmentations" / f"{name}.nii.gz", (label == value).astype(np.uint8))
    (root / "meta.csv").write_text("image_id;age;gender;split\ns0000;60;m;train\ns0001;70;f;train\ns0002;50;f;test\n")
    return root


def test_totalsegmentator(tmp_path):
    root = make_totalsegmentator(tmp_path / "Totalsegmentator_dataset_v201")
    out = tmp_path / "ts"
    summary = prepare("totalsegmentator", root, out)
    assert summary["cases"] == 3
    m = meta(out)
    assert m["labels"] == {"background": 0, "liver": 5, "left_kidney": 3, "left_first_rib": 92}  # TS v2 ids
    assert m["channel_names"] == {"0": "CT"} and m["numTraining"] == 3 and m["file_ending"] == ".nii.gz"
    rows = {r["name"]: r for r in m["label_table"]}
    assert rows["left_first_rib"]["source_name"] == "rib_left_1"
    assert rows["left_first_rib"]["snomed_type"] == ["48535007", "First rib"]
    assert m["cases"]["s0001"]["annotated"] == [3, 5] and "annotated" not in m["cases"]["s0000"]
    assert m["cases"]["s0002"]["split"] == "test"
    cases = check_readable(out)
    assert cases["s0001"].annotated == (3, 5) and cases["s0000"].modality == "CT"
    label = read(out / "labelsTr" / "s0000.nii.gz")
    expected = labelmap([5, 3, 92])
    assert np.array_equal(label, expected)
    assert np.array_equal(read(out / "imagesTr" / "s0000_0000.nii.gz"), ct(0))
    train = prepare("totalsegmentator", root, tmp_path / "train", split="train")
    assert train["cases"] == 2 and "1 case(s) outside --split train" in train["skipped"]


def test_totalsegmentator_mr_dataset(tmp_path):
    root = tmp_path / "ts_mr"
    write_volume(root / "s0001" / "mri.nii.gz", ct(1))
    write_volume(root / "s0001" / "segmentations" / "lung_left.nii.gz", (labelmap([1]) == 1).astype(np.uint8))
    prepare("totalsegmentator", root, tmp_path / "out")
    m = meta(tmp_path / "out")
    assert m["labels"] == {"background": 0, "left_lung": 10} and m["channel_names"] == {"0": "MR"}


def test_totalsegmentator_errors(tmp_path):
    root = make_totalsegmentator(tmp_path / "ts")
    (root / "s0001" / "segmentations" / "not_an_organ.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no TotalSegmentator release defines: not_an_organ"):
        prepare("totalsegmentator", root, tmp_path / "o")
    (root / "s0001" / "segmentations" / "not_an_organ.nii.gz").unlink()
    (root / "s0002" / "ct.nii.gz").unlink()
    with pytest.raises(InputError, match="case s0002 has no ct.nii.gz"):
        prepare("totalsegmentator", root, tmp_path / "o")
    with pytest.raises(InputError, match="holds no TotalSegmentator cases") as e:
        prepare("totalsegmentator", tmp_path / "ts" / "s0000", tmp_path / "o")
    assert "s0000/, s0001/" in e.value.hint
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- AMOS22, FLARE22, BTCV


def make_amos(root: Path) -> Path:
    for part, case, seed in (("Tr", "amos_0001", 1), ("Tr", "amos_0540", 2), ("Va", "amos_0002", 3)):
        write_volume(root / f"images{part}" / f"{case}.nii.gz", ct(seed))
        write_volume(root / f"labels{part}" / f"{case}.nii.gz", labelmap([1, 8, 9, 15]))
    names = [
        "background",
        "spleen",
        "right kidney",
        "left kidney",
        "gall bladder",
        "esophagus",
        "liver",
        "stomach",
        "arota",
        "postcava",
        "pancreas",
        "right adrenal gland",
        "left adrenal gland",
        "duodenum",
        "bladder",
        "prostate/uterus",
    ]
    (root / "dataset.json").write_text(json.dumps({"name": "AMOS", "labels": {str(i): n for i, n in enumerate(names)}}))
    (root / "imagesTs").mkdir()
    return root


def test_amos22(tmp_path):
    root = make_amos(tmp_path / "amos22")
    out = tmp_path / "amos"
    assert prepare("amos22", tmp_path, out)["cases"] == 3  # the archive's parent folder is found too
    m = meta(out)
    assert list(m["labels"]) == [
        "background",
        "spleen",
        "right_kidney",
        "left_kidney",
        "gallbladder",
        "esophagus",
        "liver",
        "stomach",
        "aorta",
        "inferior_vena_cava",
        "pancreas",
        "right_adrenal_gland",
        "left_adrenal_gland",
        "duodenum",
        "urinary_bladder",
        "prostate_or_uterus",
    ]
    assert m["labels"]["prostate_or_uterus"] == 15 and m["channel_names"] == {"0": "CT or MR"}
    assert m["cases"]["amos_0540"]["modality"] == "MR" and m["cases"]["amos_0001"]["modality"] == "CT"
    assert m["cases"]["amos_0002"]["split"] == "val"
    rows = {r["name"]: r for r in m["label_table"]}
    assert rows["inferior_vena_cava"]["source_name"] == "postcava" and rows["prostate_or_uterus"]["snomed_type"] is None
    cases = check_readable(out)
    assert cases["amos_0540"].modality == "MR"
    assert np.array_equal(read(out / "labelsTr" / "amos_0540.nii.gz"), labelmap([1, 8, 9, 15]))
    mr = prepare("amos22", root, tmp_path / "mr", modality="mr")
    assert mr["cases"] == 1 and meta(tmp_path / "mr")["channel_names"] == {"0": "MR"}
    assert prepare("amos22", root, tmp_path / "va", split="val")["cases"] == 1


def test_flare22(tmp_path):
    root = tmp_path / "FLARE22Train"
    for n in (1, 2):
        write_volume(root / "images" / f"FLARE22_Tr_000{n}_0000.nii.gz", ct(n))
        write_volume(root / "labels" / f"FLARE22_Tr_000{n}.nii.gz", labelmap([1, 7, 13]))
    prepare("flare22", tmp_path, tmp_path / "flare")
    m = meta(tmp_path / "flare")
    assert m["labels"] == {"background": 0, **{o.name: o.label for o in ABDOMEN13}}
    cases = check_readable(tmp_path / "flare")
    assert sorted(cases) == ["FLARE22_Tr_0001", "FLARE22_Tr_0002"]
    assert np.array_equal(read(tmp_path / "flare" / "labelsTr" / "FLARE22_Tr_0002.nii.gz"), labelmap([1, 7, 13]))


def make_btcv(root: Path, cases=(1, 2)) -> Path:
    for n in cases:
        write_volume(root / "img" / f"img{n:04d}.nii.gz", ct(n))
        # BTCV-like: the label's header differs from the image's by float rounding only
        write_volume(root / "label" / f"label{n:04d}.nii.gz", labelmap([1, 10, 13]), origin=(1e-5, 0.0, 0.0))
    return root


def test_btcv(tmp_path):
    make_btcv(tmp_path / "RawData" / "Training")
    out = tmp_path / "btcv"
    prepare("btcv", tmp_path, out)
    m = meta(out)
    assert m["labels"]["portal_vein_and_splenic_vein"] == 10 and m["labels"]["left_adrenal_gland"] == 13
    cases = check_readable(out)  # the loader's strict header check passes: the image's geometry was written
    assert sorted(cases) == ["btcv_0001", "btcv_0002"]
    assert np.array_equal(read(out / "labelsTr" / "btcv_0001.nii.gz"), labelmap([1, 10, 13]))
    organ = load_dataset(out).organs[10]
    assert organ.prompt == "portal vein and splenic vein" and organ.snomed_type == (
        "110765007",
        "Portal vein and splenic vein",
    )


# --------------------------------------------------------------------------- CHAOS


def write_dicom_series(
    folder: Path, volume: np.ndarray, names: list[str], instances: list[int], spacing=(1.5, 1.5, 6.0)
) -> None:
    """One DICOM file per slice k (z = k * spacing) with the given file names and InstanceNumbers."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, (name, instance) in enumerate(zip(names, instances)):
        image = sitk.GetImageFromArray(volume[k])
        image.SetSpacing(spacing[:2])
        for key, value in {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0032": f"0\\0\\{k * spacing[2]}",
            "0020|0013": str(instance),
            "0018|0050": str(spacing[2]),
            "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.3.{k + 1}",
        }.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / name))
        writer.Execute(image)


GREYS = {1: 63, 2: 126, 3: 189, 4: 252}


def make_chaos_patient(mr: Path, patient: int, matching_names: bool) -> np.ndarray:
    """T2SPIR and T1DUAL series whose instance numbers run head to feet (against z).

    Slice k holds grey value 10 * (k + 1) and a marker block at rows 2+k (an in-plane asymmetric
    pattern); its PNG labels exactly that block with organ 1 + k % 4, so a wrong slice order or a
    flipped PNG shows up as labels off the marker. Returns the expected label volume (k, j, i)."""
    depth = 5
    volume = np.zeros((depth, 12, 10), np.int16)
    expected = np.zeros(volume.shape, np.uint8)
    instances = [depth - k for k in range(depth)]  # instance 1 is the top slice (largest z)
    for k in range(depth):
        volume[k] = 10 * (k + 1)
        volume[k, 2 + k : 4 + k, 1:4] = 1000
        expected[k, 2 + k : 4 + k, 1:4] = 1 + k % 4
    for sequence, dicom_dirs in (("T2SPIR", ["DICOM_anon"]), ("T1DUAL", ["DICOM_anon/InPhase", "DICOM_anon/OutPhase"])):
        base = mr / str(patient) / sequence
        for d, dicom_dir in enumerate(dicom_dirs):
            names = [f"IMG-000{patient}-{2 * instances[k] - d:05d}.dcm" for k in range(depth)]
            write_dicom_series(base / dicom_dir, volume, names, instances)
        ground = base / "Ground"
        ground.mkdir(parents=True)
        for k in range(depth):
            png = np.zeros(volume.shape[1:], np.uint8)
            png[expected[k] > 0] = GREYS[int(expected[k].max())] - 3  # inside the range, not the nominal value
            png[0, 0] = 30  # outside every range: background
            name = (
                f"IMG-000{patient}-{2 * instances[k]:05d}.png"
                if matching_names
                else f"liver_GT_{instances[k] - 1:03d}.png"
            )
            Image.fromarray(png).save(ground / name)
    return expected


def test_chaos_slice_order_and_orientation(tmp_path):
    mr = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "MR"
    expected = {1: make_chaos_patient(mr, 1, matching_names=False), 3: make_chaos_patient(mr, 3, matching_names=True)}
    out = tmp_path / "chaos"
    prepare("chaos", tmp_path, out)
    m = meta(out)
    assert m["labels"] == {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    cases = check_readable(out)
    assert sorted(cases) == ["chaos_t2_01", "chaos_t2_03"] and cases["chaos_t2_01"].modality == "MR (T2-SPIR)"
    for patient, want in expected.items():
        image = sitk.ReadImage(str(out / "imagesTr" / f"chaos_t2_{patient:02d}_0000.nii.gz"))
        array = sitk.GetArrayFromImage(image)
        assert [image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(5)] == [0, 6, 12, 18, 24]
        label = read(out / "labelsTr" / f"chaos_t2_{patient:02d}.nii.gz")
        assert np.array_equal(label, want)
        assert np.array_equal(label > 0, array == 1000)  # every mask lies on its own slice's marker
    prepare("chaos", tmp_path, tmp_path / "t1", modality="t1-out")
    assert np.array_equal(read(tmp_path / "t1" / "labelsTr" / "chaos_t1out_01.nii.gz"), expected[1])


def test_chaos_errors(tmp_path):
    mr = tmp_path / "MR"
    make_chaos_patient(mr, 2, matching_names=False)
    pngs = sorted((mr / "2" / "T2SPIR" / "Ground").iterdir())
    pngs[0].unlink()
    with pytest.raises(InputError, match="5 DICOM slices but 4 PNG masks"):
        prepare("chaos", tmp_path, tmp_path / "o")
    with pytest.raises(InputError, match="has no modality 't1'") as e:
        prepare("chaos", tmp_path, tmp_path / "o", modality="t1")
    assert "t1-in" in e.value.hint


# --------------------------------------------------------------------------- outputs and errors


def test_wrong_layout_gets_a_clear_error(tmp_path):
    make_btcv(tmp_path / "btcv")
    with pytest.raises(InputError, match="does not look like AMOS22: no imagesTr/ and labelsTr/") as e:
        prepare("amos22", tmp_path / "btcv", tmp_path / "o")
    assert "imagesTr" in e.value.hint
    with pytest.raises(InputError, match="does not exist"):
        prepare("flare22", tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(InputError, match="unknown dataset 'kits'"):
        prepare("kits", tmp_path, tmp_path / "o")
    (tmp_path / "btcv" / "img" / "img0002.nii.gz").unlink()
    with pytest.raises(InputError, match="1 file.* no counterpart .*: label0002.nii.gz"):
        prepare("btcv", tmp_path / "btcv", tmp_path / "o")
    write_volume(tmp_path / "btcv" / "img" / "img0002.nii.gz", ct(2))
    write_volume(tmp_path / "btcv" / "label" / "label0002.nii.gz", labelmap([1, 14]))
    with pytest.raises(InputError, match="case 'btcv_0002': the label .* holds values 14"):
        prepare("btcv", tmp_path / "btcv", tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))  # nothing half-written


def test_existing_output_is_refused_without_overwrite(tmp_path):
    root = make_btcv(tmp_path / "btcv", cases=(1,))
    out = tmp_path / "out"
    prepare("btcv", root, out)
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="is not empty") as e:
        prepare("btcv", root, out)
    assert "--overwrite" in e.value.hint and (out / "mine.txt").exists()
    make_btcv(root, cases=(2,))
    prepare("btcv", root, out, overwrite=True)
    assert not (out / "mine.txt").exists() and meta(out)["numTraining"] == 2
    with pytest.raises(OutputError, match="holds the input data"):
        prepare("btcv", root, tmp_path, overwrite=True)


def test_cancel_leaves_nothing(tmp_path):
    root = make_btcv(tmp_path / "btcv")
    cancel = CancelToken()
    events = []

    def on_event(event):
        events.append(event)
        if event.get("done") == 1:
            cancel.cancel()

    with pytest.raises(Cancelled):
        prepare("btcv", root, tmp_path / "out", progress=Progress(on_event), cancel=cancel)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["btcv"]
    assert events[0] == {"event": "progress", "stage": "prepare btcv", "done": 0, "total": 2}


def test_cli_subprocess(tmp_path):
    root = make_btcv(tmp_path / "btcv")
    out = tmp_path / "out"
    args = ["prepare", "btcv", "--input", str(root), "--output", str(out)]
    done = subprocess.run(
        backend_command(*args, "--progress", "json"),
        capture_output=True,
        encoding="utf-8",
        env=python_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["cases"] == 2
    assert [e["done"] for e in events if e["event"] == "progress"] == [0, 1, 2]
    assert (out / "imagesTr" / "btcv_0001_0000.nii.gz").is_file() and (out / "labelsTr" / "btcv_0002.nii.gz").is_file()
    again = subprocess.run(backend_command(*args), capture_output=True, encoding="utf-8", env=python_env(), timeout=120)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "is not empty. Pass --overwrite" in again.stderr
    wrong = subprocess.run(
        backend_command("prepare", "chaos", "--input", str(root), "--output", str(tmp_path / "c")),
        capture_output=True,
        encoding="utf-8",
        env=python_env(),
        timeout=120,
    )
    assert wrong.returncode == 2 and "does not look like CHAOS" in wrong.stderr and "Traceback" not in wrong.stderr
