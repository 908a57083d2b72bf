"""The synthetic abdominal CT phantom: determinism, labels, orientation, HU, distractors, dataset files."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.phantom import (
    LABEL_IDS,
    TARGET_ORGAN,
    PhantomSpec,
    blob_extents,
    generate_phantom,
    write_phantom_dataset,
)
from TGatedSegmentLib.vocabulary import lookup

SEEDS = range(6)
ODD_SPEC = PhantomSpec(shape=(40, 96, 112), spacing=(3.0, 0.8, 0.7), n_distractors=5)  # non-square: catches axis swaps


@pytest.fixture(scope="module")
def phantoms():
    return [generate_phantom(seed) for seed in SEEDS]


def _erode(mask: np.ndarray) -> np.ndarray:
    """In-plane 4-neighbour erosion (drops the partial-volume rim)."""
    e = mask.copy()
    e[:, 1:, :] &= mask[:, :-1, :]
    e[:, :-1, :] &= mask[:, 1:, :]
    e[:, :, 1:] &= mask[:, :, :-1]
    e[:, :, :-1] &= mask[:, :, 1:]
    return e


def _slices_with(mask: np.ndarray) -> np.ndarray:
    return np.nonzero(mask.any(axis=(1, 2)))[0]


def _component_areas(mask2d: np.ndarray) -> list[int]:
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask2d.astype(np.uint8)), True))
    return np.bincount(cc.ravel())[1:].tolist()


def _centroid_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[2].mean())


def test_same_seed_same_volume_different_seeds_differ():
    a, b = generate_phantom(3), generate_phantom(3)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.distractor_mask, b.distractor_mask)
    assert a.distractors == b.distractors
    c = generate_phantom(4)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)
    # (dataset seed, case index) seeds, as the dataset writer uses them
    assert np.array_equal(generate_phantom((7, 1)).image, generate_phantom([7, 1]).image)
    assert not np.array_equal(generate_phantom((7, 1)).image, generate_phantom((7, 2)).image)


def test_arrays_types_and_canonical_shape(phantoms):
    p = phantoms[0]
    spec = PhantomSpec()
    assert p.image.shape == p.labels.shape == p.distractor_mask.shape == spec.shape
    assert p.image.dtype == np.float32 and p.labels.dtype == np.uint8 and p.distractor_mask.dtype == bool
    assert p.spacing == spec.spacing
    assert p.target == TARGET_ORGAN and p.target_label == LABEL_IDS[TARGET_ORGAN]
    for label, name in p.label_names.items():
        organ = lookup(name)
        assert organ is not None and organ.label == label, name  # FLARE22 ids of the vocabulary
    assert {"liver", "spleen", "left_kidney", "right_kidney", TARGET_ORGAN} <= set(p.label_names.values())
    assert set(np.unique(p.labels)) <= {0, *p.label_names}


@pytest.mark.parametrize("which", ["default", "odd"])
def test_distractors_are_unlabelled_thin_and_apart_from_the_target(phantoms, which):
    spec = PhantomSpec() if which == "default" else ODD_SPEC
    cases = phantoms if which == "default" else [generate_phantom(s, ODD_SPEC) for s in range(3)]
    for p in cases:
        dm, tid = p.distractor_mask, p.target_label
        # as many as fit beside the target (its default size leaves room for 3-8 of 8)
        assert 3 <= len(p.distractors) <= spec.n_distractors
        assert not (dm & (p.labels != 0)).any(), "a distractor voxel is labelled"
        assert sum(d.voxels for d in p.distractors) == dm.sum()
        extents = blob_extents(dm)  # 26-connected components, independent of the bookkeeping
        assert len(extents) == len(p.distractors)
        assert sorted((d.z0, d.z1) for d in p.distractors) == extents
        assert all(1 <= z1 - z0 + 1 <= 2 for z0, z1 in extents)
        # never touching the target: the union has the distractors plus the target's own components
        target = p.labels == tid
        assert len(blob_extents(dm | target)) == len(extents) + len(blob_extents(target))
        # the target spans clearly more slices, and is absent from many
        tz = _slices_with(target)
        assert spec.target_slices[0] <= len(tz) <= spec.target_slices[1]
        assert len(tz) >= 5 and tz[-1] - tz[0] + 1 == len(tz)
        assert len(tz) < p.labels.shape[0]
        # distractors also where the target is absent (at least half of them)
        outside = [d for d in p.distractors if not set(range(d.z0, d.z1 + 1)) & set(tz.tolist())]
        assert len(outside) >= 1
        assert not target[[z for d in outside for z in range(d.z0, d.z1 + 1)]].any()


def test_every_organ_is_absent_from_some_slices(phantoms):
    for p in phantoms:
        for label, name in p.label_names.items():
            z = _slices_with(p.labels == label)
            assert 0 < len(z) < p.labels.shape[0], name


@pytest.mark.parametrize("which", ["default", "odd"])
def test_lateral_organs_in_the_canonical_frame(phantoms, which):
    cases = phantoms if which == "default" else [generate_phantom(s, ODD_SPEC) for s in range(3)]
    for p in cases:
        body = p.image > -500
        body_x = _centroid_x(body)
        body_y = float(np.nonzero(body)[1].mean())
        lk, rk = p.labels == LABEL_IDS["left_kidney"], p.labels == LABEL_IDS["right_kidney"]
        assert _centroid_x(lk) > body_x > _centroid_x(rk)
        assert _centroid_x(p.labels == LABEL_IDS["liver"]) < body_x  # patient's right = small x
        assert _centroid_x(p.labels == LABEL_IDS["spleen"]) > body_x
        assert _centroid_x(p.labels == LABEL_IDS["left_adrenal_gland"]) > body_x
        bone = p.image > 300
        assert float(np.nonzero(bone)[1].mean()) > body_y  # spine posterior = large y
        # the kidney pair differs only by side: same size and slices, mirrored about the midline
        assert lk.sum() == rk.sum()
        assert np.array_equal(_slices_with(lk), _slices_with(rk))
        assert abs(_centroid_x(lk) + _centroid_x(rk) - 2 * p.body_center_yx[1]) < 1e-6
        zr_, yr_, xr_ = np.nonzero(rk)
        mirrored = np.zeros_like(lk)
        mirrored[zr_, yr_, (np.rint(2 * p.body_center_yx[1]) - xr_).astype(int)] = True  # x' = 2 cx - x
        assert np.array_equal(mirrored, lk)
        # in SimpleITK's LPS physical space the left kidney has the larger x
        image, _ = p.to_sitk()
        zl, yl, xl = (float(np.mean(a)) for a in np.nonzero(lk))
        zr, yr, xr = (float(np.mean(a)) for a in np.nonzero(rk))
        assert (
            image.TransformContinuousIndexToPhysicalPoint((xl, yl, zl))[0]
            > image.TransformContinuousIndexToPhysicalPoint((xr, yr, zr))[0]
        )


def test_hounsfield_ranges(phantoms):
    ranges = {
        "liver": (40, 80),
        "spleen": (30, 65),
        "right_kidney": (15, 45),
        "left_kidney": (15, 45),
        "aorta": (25, 65),
        "inferior_vena_cava": (20, 60),
        TARGET_ORGAN: (-10, 30),
    }
    for p in phantoms:
        img = p.image
        assert -1024 <= img.min() and img.max() <= 1200
        corners = np.concatenate([img[:, :4, :4].ravel(), img[:, -4:, -4:].ravel()])
        assert abs(float(np.median(corners)) + 1000) < 10  # air outside the body
        for name, (lo, hi) in ranges.items():
            med = float(np.median(img[_erode(p.labels == LABEL_IDS[name])]))
            assert lo <= med <= hi, (name, med)
        assert 500 <= img.max() <= 900  # cortical bone
        body = img > -500
        soft = img[body & (p.labels == 0) & (img > -200) & (img < -50)]
        assert soft.size > 0.1 * body.sum()  # plenty of fat
        # noise: voxel std inside the liver is CT-like
        assert 8 < float(img[_erode(p.labels == LABEL_IDS["liver"])].std()) < 30


def test_distractors_look_like_the_target_in_single_slices(phantoms):
    """Per slice, distractor sections match the target's sections in HU, texture and area."""
    target_areas, distractor_areas = [], []
    for p in phantoms:
        target = p.labels == p.target_label
        core_t, core_d = _erode(target), _erode(p.distractor_mask)
        assert abs(float(p.image[core_t].mean()) - float(p.image[core_d].mean())) < 8
        assert 0.7 < float(p.image[core_d].std()) / float(p.image[core_t].std()) < 1.4
        target_areas += [int(target[z].sum()) for z in _slices_with(target)]
        for z in _slices_with(p.distractor_mask):
            distractor_areas += _component_areas(p.distractor_mask[z])
    ratio = np.mean(distractor_areas) / np.mean(target_areas)
    print(f"\nmean section area: target {np.mean(target_areas):.1f} px, distractors {np.mean(distractor_areas):.1f} px")
    assert 0.75 < ratio < 1.33
    lo, hi = np.percentile(target_areas, [5, 95])
    assert lo * 0.5 <= np.median(distractor_areas) <= hi


def test_to_sitk_geometry(phantoms):
    p = phantoms[1]
    image, labels = p.to_sitk()
    nz, ny, nx = p.labels.shape
    for img in (image, labels):
        assert img.GetSize() == (nx, ny, nz)
        assert img.GetSpacing() == tuple(p.spacing[::-1])
        assert img.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        assert img.GetOrigin() == p.origin and any(o != 0 for o in img.GetOrigin())
    assert np.array_equal(sitk.GetArrayFromImage(image), p.image)
    assert np.array_equal(sitk.GetArrayFromImage(labels), p.labels)
    assert image.GetPixelID() == sitk.sitkFloat32 and labels.GetPixelID() == sitk.sitkUInt8


def test_written_dataset_reads_back(tmp_path):
    spec = PhantomSpec(shape=(32, 64, 64), spacing=(5.0, 1.5, 1.5), n_distractors=4, target_slices=(7, 11))
    out = write_phantom_dataset(tmp_path / "ds", 2, seed=11, spec=spec)
    assert out == tmp_path / "ds"
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"]["background"] == 0
    assert meta["labels"][TARGET_ORGAN] == LABEL_IDS[TARGET_ORGAN]
    assert meta["labels"]["left_kidney"] == 13 and meta["labels"]["liver"] == 1
    assert set(meta["cases"]) == {"phantom_000", "phantom_001"}
    arrays = []
    for i, (name, case) in enumerate(sorted(meta["cases"].items())):
        assert case["modality"] == "CT"
        assert case["annotated"] == sorted(v for v in meta["labels"].values() if v)
        image = sitk.ReadImage(str(out / "imagesTr" / f"{name}_0000.nii.gz"))
        labels = sitk.ReadImage(str(out / "labelsTr" / f"{name}.nii.gz"))
        for img in (image, labels):
            assert img.GetSize() == (64, 64, 32)
            assert np.allclose(img.GetSpacing(), (1.5, 1.5, 5.0))
            assert np.allclose(img.GetDirection(), np.eye(3).ravel())
        assert np.allclose(image.GetOrigin(), labels.GetOrigin()) and any(o != 0 for o in image.GetOrigin())
        ph = generate_phantom((11, i), spec)  # each case is seeded from (seed, index)
        img_arr, lab_arr = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels)
        assert img_arr.dtype == np.int16
        assert np.array_equal(img_arr, np.round(ph.image).astype(np.int16))
        assert np.array_equal(lab_arr, ph.labels)
        assert np.allclose(image.GetOrigin(), ph.origin)
        assert case["present"] == sorted(int(v) for v in np.unique(lab_arr) if v)
        arrays.append(img_arr)
    assert not np.array_equal(arrays[0], arrays[1])
    leftovers = [p.name for p in out.rglob(".*")]
    assert leftovers == [], leftovers  # no temporary files left behind


def test_invalid_specs_are_user_errors():
    with pytest.raises(InputError):
        PhantomSpec(shape=(8, 128, 128))
    with pytest.raises(InputError):
        PhantomSpec(distractor_slices=(1, 9), target_slices=(8, 13))
    with pytest.raises(InputError):
        PhantomSpec(spacing=(5.0, 0.0, 1.5))


def test_generation_time_is_reported():
    generate_phantom(100)  # warm-up
    start = time.perf_counter()
    n = 5
    for seed in range(n):
        generate_phantom(seed)
    per_volume = (time.perf_counter() - start) / n
    print(f"\ngenerate_phantom {PhantomSpec().shape}: {per_volume * 1000:.0f} ms per volume")
