"""The fast CPU path (issue 12): int8 agrees with float32 on a trained model; precision choices and
their errors; bf16 autocast runs on a CPU; the thread rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.datasets import phantom

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.inference.api import Segmenter
from TGatedSegmentLib.inference.precision import INT8_MIN_SLICES, resolve_precision, use_all_cores
from TGatedSegmentLib.io.volume import Geometry

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def trained_tiny(tiny_phantom_run):
    """A tiny model that has learnt the phantom: int8 must keep what it learnt."""
    return tiny_phantom_run.run / "best"


def _segment(checkpoint, precision, image):
    geometry = Geometry(
        size=image.shape[::-1],
        spacing=(2.0, 2.0, 3.0),
        origin=(0.0, 0.0, 0.0),
        direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
    )
    seg = Segmenter(checkpoint, device="cpu", precision=precision)
    return seg, seg.segment(
        image, prompts="liver, spleen, left kidney", geometry=geometry, modality="ct", return_probabilities=True
    )


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_int8_agrees_with_fp32_on_a_trained_model(trained_tiny):
    image, labels = phantom(depth=12, size=48, seed=5, shift=1)  # a phantom it was not trained on
    exact_seg, exact = _segment(trained_tiny, "fp32", image)
    fast_seg, fast = _segment(trained_tiny, "int8", image)
    assert fast_seg.engine.quantized and not exact_seg.engine.quantized
    assert np.abs(fast.probabilities - exact.probabilities).max() < 0.2
    agreement = float((fast.labelmap == exact.labelmap).mean())
    assert agreement >= 0.995, agreement
    for i, label in enumerate((1, 2, 3)):
        truth = labels == label
        assert abs(_dice(fast.masks[i], truth) - _dice(exact.masks[i], truth)) <= 0.01
    assert _dice(exact.masks[0], labels == 1) > 0.5  # the model did learn: the comparison means something


def test_int8_waits_for_a_volume_deep_enough(tiny_checkpoint):
    seg, _ = _segment(tiny_checkpoint, "int8", phantom(depth=INT8_MIN_SLICES - 1, size=32)[0])
    assert not seg.engine.quantized  # quantising would cost more than it saves
    seg.segment(
        phantom(depth=INT8_MIN_SLICES, size=32)[0],
        prompts="liver",
        geometry=Geometry(
            size=(32, 32, INT8_MIN_SLICES),
            spacing=(1.0, 1.0, 1.0),
            origin=(0.0, 0.0, 0.0),
            direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
        ),
        modality="ct",
    )
    assert seg.engine.quantized
    assert seg.engine.stats.seconds["quantize"] > 0


def test_bf16_autocast_runs_on_a_cpu(tiny_checkpoint):
    _, exact = _segment(tiny_checkpoint, "fp32", phantom(depth=4, size=32)[0])
    seg, fast = _segment(tiny_checkpoint, "bf16", phantom(depth=4, size=32)[0])
    assert seg.engine.amp_dtype is torch.bfloat16 and fast.probabilities.dtype == np.float32
    assert np.abs(fast.probabilities - exact.probabilities).max() < 0.1


def test_precision_choices():
    assert resolve_precision(None, CPU) in ("int8", "bf16")
    assert resolve_precision("auto", CUDA) == "fp32"  # mixed precision on a GPU is opt-in (not measured here)
    assert resolve_precision("auto", CPU, caller_model=True) == "fp32"  # never quantise a caller's model
    assert resolve_precision("FP16", CUDA) == "fp16"
    for bad, device in (("int8", CUDA), ("fp16", CPU), ("fp64", CPU)):
        with pytest.raises(InputError) as info:
            resolve_precision(bad, device)
        assert info.value.hint
    with pytest.raises(InputError):
        resolve_precision("int8", CPU, caller_model=True)


def test_threads_never_exceed_the_cores_this_process_may_use(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        if hasattr(__import__("os"), "sched_getaffinity"):
            monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
            assert use_all_cores() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_refuses_a_precision_the_device_cannot_run(tmp_path, tiny_checkpoint):
    from helpers.datasets import write
    from helpers.env import run_cli

    image = tmp_path / "ct.nii.gz"
    write(phantom(depth=4, size=32)[0].astype(np.int16), image)
    proc = run_cli(
        "segment",
        str(image),
        "--prompts",
        "liver",
        "--checkpoint",
        str(tiny_checkpoint),
        "-o",
        str(tmp_path / "o.seg.nrrd"),
        "--device",
        "cpu",
        "--precision",
        "fp16",
        timeout=300,
    )
    assert proc.returncode == 2 and "fp16 runs on CUDA only" in proc.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_only_the_inference_commands_make_openmp_threads_sleep(monkeypatch):
    """Sleeping OpenMP threads help inference on a shared machine and slow training (1.3x fewer steps)."""
    import os

    from TGatedSegmentLib.inference.precision import passive_waiting_threads

    cases = [
        (["segment", "ct.nii.gz"], "PASSIVE"),
        (["--debug", "serve"], "PASSIVE"),
        (["evaluate"], "PASSIVE"),
        (["train", "--data", "d"], None),
        (["demo"], None),
        ([], None),
        (None, "PASSIVE"),
    ]
    for argv, expected in cases:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        passive_waiting_threads(argv)
        assert os.environ.get("OMP_WAIT_POLICY") == expected, argv
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own setting wins
    passive_waiting_threads(["segment"])
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
