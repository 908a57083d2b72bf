"""Uncertainty: probabilistic temporal attention and Monte Carlo inference on cached encoder tokens."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers.env import backend_command, python_env
from torch import nn

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.inference.api import Segmenter
from TGatedSegmentLib.inference.engine import binary_entropy
from TGatedSegmentLib.io.volume import Geometry
from TGatedSegmentLib.model.adapter import TemporalAdapter
from TGatedSegmentLib.model.checkpoint import init_checkpoint
from TGatedSegmentLib.model.configuration import AdapterConfig
from TGatedSegmentLib.model.probabilistic import ProbabilisticSelfAttention


def test_probabilistic_attention_without_sampling_equals_deterministic():
    torch.manual_seed(0)
    prob = ProbabilisticSelfAttention(16, 4, beta=2.35).eval()
    det = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    det.load_state_dict({k: v for k, v in prob.state_dict().items() if not k.startswith("var_proj")})
    x = torch.randn(7, 5, 16)
    # at initialisation every key has the same variance: the beta * S_sigma term cancels in the softmax
    assert torch.allclose(prob(x, x, x)[0], det(x, x, x, need_weights=False)[0], atol=1e-6)
    with torch.no_grad():  # a trained, token-dependent variance changes the scores, unless beta = 0
        prob.var_proj.weight.normal_()
    assert not torch.allclose(prob(x, x, x)[0], det(x, x, x, need_weights=False)[0], atol=1e-4)
    prob.beta = 0.0
    assert torch.allclose(prob(x, x, x)[0], det(x, x, x, need_weights=False)[0], atol=1e-6)
    prob.sample = True  # sampling values adds noise
    assert not torch.allclose(prob(x, x, x)[0], det(x, x, x, need_weights=False)[0], atol=1e-4)


def test_probabilistic_adapter_without_sampling_equals_deterministic_adapter():
    torch.manual_seed(0)
    cfg = dict(proj_dim=16, ffn_dim=32, num_heads=4, spatial_heads=4)
    det = TemporalAdapter(AdapterConfig(**cfg), hidden_size=32).eval()
    with torch.no_grad():  # a trained-looking adapter (a fresh residual one adds exactly nothing)
        for p in det.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    prob = TemporalAdapter(AdapterConfig(probabilistic=True, **cfg), hidden_size=32).eval()
    missing = prob.load_state_dict(det.state_dict(), strict=False).missing_keys
    assert missing and all(".var_proj." in k for k in missing)  # a deterministic checkpoint initialises it
    window = torch.randn(2, 5, 10, 32)
    assert torch.allclose(prob(window), det(window), atol=1e-6)
    prob.train()  # training samples the values (reparameterisation) -> outputs vary
    assert not torch.allclose(prob(window), prob(window))


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    array = rng.normal(40, 30, (5, 32, 32)).astype(np.float32)
    geometry = Geometry(
        size=(32, 32, 5), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
    )
    return array, geometry


def test_monte_carlo_encodes_each_slice_once(tiny_checkpoint, volume):
    seg = Segmenter(tiny_checkpoint, device="cpu", batch_size=2)
    calls = []
    # every encode starts at the patch embedding (the encoder may stop before its last layer)
    seg.model.base_model.clip.vision_model.embeddings.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    result = seg.segment(volume[0], prompts="liver, spleen", geometry=volume[1], uncertainty=6, modality="ct")
    assert sum(calls) == 5  # 5 slices, each through the vision encoder once, whatever N is
    assert result.stats.windows_fused == 5 * 6  # the adapter runs N times per slice
    assert result.entropy.shape == result.masks.shape == (2, 5, 32, 32)
    assert result.uncertainty["samples"] == 6 and "dropout" in result.uncertainty["method"]
    assert (result.mutual_information > 0).any()  # dropout makes the samples disagree somewhere
    assert (result.mutual_information <= result.entropy + 1e-5).all()


def test_entropy_is_zero_where_samples_agree(tmp_path, tiny_config_file, volume):
    ckpt = init_checkpoint(
        tiny_config_file,
        tmp_path / "no-dropout",
        tokenizer="compact",
        adapter=AdapterConfig.default_for(
            32, dropout=0.0, drop_path_rate=0.0, spatial_drop_path=0.0, head_dropout=0.0, head_out_dropout=0.0
        ),
    )
    seg = Segmenter(ckpt, device="cpu")
    with torch.no_grad():  # sharpen the untrained decoder so that many voxels are confidently 0 or 1
        last = seg.model.base_model.decoder.transposed_convolution[-1]
        last.weight.mul_(1e4)
        last.bias.mul_(1e4)
    mc = seg.segment(
        volume[0], prompts="liver", geometry=volume[1], uncertainty=4, modality="ct", return_probabilities=True
    )
    plain = seg.segment(volume[0], prompts="liver", geometry=volume[1], modality="ct", return_probabilities=True)
    assert np.allclose(mc.probabilities, plain.probabilities, atol=1e-5)  # no stochastic layer: samples identical
    assert np.abs(mc.mutual_information).max() < 1e-5  # ... so they all agree
    confident = (plain.probabilities < 1e-6) | (plain.probabilities > 1 - 1e-6)
    assert confident.any() and mc.entropy[confident].max() < 1e-4
    assert np.allclose(mc.entropy, binary_entropy(torch.from_numpy(mc.probabilities)).numpy(), atol=1e-5)


@pytest.mark.parametrize("direction", [(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)])
def test_monte_carlo_on_the_model_input_grid(tmp_path, tiny_config_file, direction):
    """Slices already of the model's input size (no resampling of the outputs): the phantom demo's case."""
    from TGatedSegmentLib.model.configuration import PreprocessConfig

    ckpt = init_checkpoint(
        tiny_config_file, tmp_path / "ckpt64", tokenizer="compact", preprocessing=PreprocessConfig(image_size=64)
    )
    array = np.random.default_rng(1).normal(40, 30, (5, 64, 64)).astype(np.float32)
    geometry = Geometry(size=(64, 64, 5), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=direction)
    seg = Segmenter(ckpt, device="cpu")
    torch.manual_seed(0)
    result = seg.segment(
        array, prompts="liver", geometry=geometry, uncertainty=3, modality="ct", return_probabilities=True
    )
    assert result.entropy.shape == result.probabilities.shape == (1, 5, 64, 64)
    assert 0.0 <= result.probabilities.min() and result.probabilities.max() <= 1.0
    assert np.allclose(result.entropy, binary_entropy(torch.from_numpy(result.probabilities)).numpy(), atol=1e-5)


def test_baseline_has_no_uncertainty(tiny_baseline_checkpoint, volume):
    seg = Segmenter(tiny_baseline_checkpoint, device="cpu")
    with pytest.raises(InputError, match="stochastic"):
        seg.segment(volume[0], prompts="liver", geometry=volume[1], uncertainty=3)


def test_cli_writes_uncertainty_maps_on_the_input_grid(tmp_path, tiny_config_file, volume):
    ckpt = tmp_path / "prob"
    proc = subprocess.run(
        backend_command(
            "init",
            "--base-config",
            str(tiny_config_file),
            "--tokenizer",
            "compact",
            "--probabilistic",
            "--output",
            str(ckpt),
        ),
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
    )
    assert proc.returncode == 0, proc.stderr
    image = volume[1].apply_to(sitk.GetImageFromArray(volume[0]))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    out = tmp_path / "seg.seg.nrrd"
    proc = subprocess.run(
        backend_command(
            "segment",
            str(tmp_path / "ct.nrrd"),
            "--prompts",
            "liver, spleen",
            "--checkpoint",
            str(ckpt),
            "--output",
            str(out),
            "--uncertainty",
            "3",
            "--progress",
            "json",
        ),
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
    )
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "seg_uncertainty"
    meta = json.loads((folder / "uncertainty.json").read_text(encoding="utf-8"))
    assert meta["samples"] == 3 and "probabilistic" in meta["method"]
    combined = sitk.ReadImage(str(folder / "entropy_combined.nii.gz"))
    assert Geometry.from_image(combined).matches(volume[1])
    liver = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "entropy_liver.nii.gz")))
    spleen = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "entropy_spleen.nii.gz")))
    assert np.allclose(sitk.GetArrayFromImage(combined), np.maximum(liver, spleen))
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["uncertainty"]["samples"] == 3
