"""A refinement head that reads the adapter's window (``RefineConfig.window``): the neighbour slices
reach the prediction at full resolution, the streaming engine gives what a per-slice forward gives,
the equal-capacity control reads copies of the centre there too, and the option's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.inference.engine import StreamingEngine
from TGatedSegmentLib.inference.reference import naive_logits
from TGatedSegmentLib.inference.volume_cache import VolumeCache
from TGatedSegmentLib.model.checkpoint import build_model
from TGatedSegmentLib.model.configuration import AdapterConfig, PreprocessConfig, RefineConfig, TGatedConfig
from TGatedSegmentLib.preprocessing.slices import SliceCodec
from TGatedSegmentLib.training.config import PREDATING, TrainConfig
from TGatedSegmentLib.training.recipes import RECIPES

PROMPTS = ["liver", "left kidney"]
PP = PreprocessConfig(image_size=32)


def _model(window: int, control: bool = False):
    """A tiny temporal model whose refinement head matters (its zero-initialised parts perturbed); a
    window head mixes through a hidden layer, as the cpu recipe's does."""
    adapter = AdapterConfig.default_for(32, ignore_context=control) if control else None
    refine = RefineConfig(4, window=window, window_mix="hidden" if window > 1 else "linear")
    loaded = build_model("builtin:tiny", tokenizer="compact", adapter=adapter, preprocessing=PP, refine=refine)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in loaded.model.refine.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    loaded.model.double().eval()
    return loaded


def _engine_logits(loaded, volume, batch_size, cache=None):
    codec = SliceCodec(loaded.config.preprocessing, dtype=torch.float64)
    engine = StreamingEngine(loaded.model, loaded.tokenizer, codec, batch_size=batch_size)
    engine.volume_cache = cache
    text = engine.text_embeddings(PROMPTS)
    logits = torch.cat([out for _, out in engine.run(lambda idx: volume[idx], volume.shape[0], text)])
    return logits, engine, codec


@pytest.mark.parametrize("depth,batch_size", [(1, 1), (4, 3), (9, 2)])
def test_the_engine_gives_the_per_slice_forward_of_a_window_refinement_head(depth, batch_size):
    loaded = _model(window=5)
    volume = np.random.default_rng(depth).random((depth, 20, 24), dtype=np.float32)
    got, engine, codec = _engine_logits(loaded, volume, batch_size)
    expected = naive_logits(loaded.model, loaded.tokenizer, codec, volume, PROMPTS)
    assert (torch.sigmoid(got) - torch.sigmoid(expected)).abs().max() < 1e-6
    assert engine.stats.slices_encoded == depth  # the window's pixels ride along with its tokens


def test_a_warm_volume_cache_gives_the_same_window_refinement():
    loaded = _model(window=3)
    volume = np.random.default_rng(0).random((7, 20, 20), dtype=np.float32)
    cache = VolumeCache()
    cache.bind("volume")
    first, _, _ = _engine_logits(loaded, volume, 2, cache)
    second, engine, _ = _engine_logits(loaded, volume, 2, cache)
    assert engine.stats.slices_encoded == 0 and torch.allclose(first, second, atol=1e-12)


def _centre_logits(loaded, window_pixels):
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        return loaded.model(window_pixels.unsqueeze(0), ids)[0]


@pytest.mark.parametrize("window,control,neighbours_matter", [(1, False, False), (5, False, True), (5, True, False)])
def test_neighbours_reach_the_prediction_only_through_a_window_head(window, control, neighbours_matter):
    """The fresh residual adapter adds nothing, so only the refinement head can read the neighbours;
    the control (5 copies of the centre) must not, here as in its adapter."""
    loaded = _model(window, control)
    pixels = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    moved = pixels.clone()
    moved[0] += 0.5  # the farthest neighbour: inside a 5-slice head's window, outside a 3-slice one's
    moved[4] -= 0.5
    before, after = _centre_logits(loaded, pixels), _centre_logits(loaded, moved)
    assert (not torch.allclose(before, after)) == neighbours_matter


def test_the_model_config_checks_the_window():
    clip = {}
    with pytest.raises(ValueError, match="odd number"):
        RefineConfig(4, window=4)
    with pytest.raises(ValueError, match="at most 1"):
        TGatedConfig(clipseg_config=clip, adapter=None, refine=RefineConfig(4, window=3))
    config = TGatedConfig(clipseg_config=clip, refine=RefineConfig(4, window=5))
    assert TGatedConfig.from_dict(config.to_dict()).refine == RefineConfig(4, window=5)
    old = config.to_dict()
    del old["refine"]["window"], old["refine"]["window_mix"]  # a checkpoint written before the options
    assert TGatedConfig.from_dict(old).refine == RefineConfig(4, window=1, window_mix="linear")
    with pytest.raises(ValueError, match="window mix"):
        RefineConfig(4, window=5, window_mix="deep")
    hidden = TGatedConfig(clipseg_config=clip, refine=RefineConfig(4, window=5, window_mix="hidden"))
    assert TGatedConfig.from_dict(hidden.to_dict()).refine.window_mix == "hidden"


def test_the_training_option(tmp_path, monkeypatch):
    base = {"data": str(tmp_path), "output": str(tmp_path / "run"), "recipe": "cpu"}
    assert TrainConfig(**base).refine_window == RECIPES["cpu"]["refine_window"] and PREDATING["refine_window"] == 1
    assert TrainConfig(**base, refine_window=5).refine_window == 5
    with pytest.raises(InputError, match="no temporal adapter"):
        TrainConfig(**base, refine_window=5, temporal=False)
    with pytest.raises(InputError, match="no refinement head"):
        TrainConfig(**base, refine_window=3, refine=0)
    # what a recipe sets lapses where it cannot apply
    monkeypatch.setitem(RECIPES["cpu"], "refine_window", 5)
    assert TrainConfig(**base).refine_window == 5
    assert TrainConfig(**base, temporal=False).refine_window == 1
    assert TrainConfig(**base, refine=0).refine_window == 1
    # the window's mix: the recipe's where there is a window, lapsing with it, refused without one
    assert TrainConfig(**base).refine_window_mix == RECIPES["cpu"]["refine_window_mix"] == "hidden"
    assert PREDATING["refine_window_mix"] == "linear"
    assert TrainConfig(**base, refine_window_mix="linear").refine_window_mix == "linear"
    assert TrainConfig(**base, refine_window=1).refine_window_mix == "linear"
    assert TrainConfig(**base, temporal=False).refine_window_mix == "linear"
    with pytest.raises(InputError, match="centre slice only"):
        TrainConfig(**base, refine_window=1, refine_window_mix="hidden")
    with pytest.raises(InputError, match="unknown|must be one of|choose"):
        TrainConfig(**base, refine_window_mix="deep")


@pytest.mark.parametrize(
    "mix,new_weights",
    [
        ("linear", {"image_window.weight", "image_window.bias"}),
        ("hidden", {f"image_window.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}),
    ],
)
def test_a_fresh_window_head_computes_what_a_centre_slice_head_does(mix, new_weights):
    """Built from the same seed, every shared weight is the same and the window's mixing starts at
    zero, so training starts from the centre-slice model (the residual adapter's rule, here too)."""
    centre, window = (
        build_model("builtin:tiny", tokenizer="compact", preprocessing=PP, refine=refine, seed=3)
        for refine in (RefineConfig(4, window=1), RefineConfig(4, window=5, window_mix=mix))
    )
    a, b = centre.model.state_dict(), window.model.state_dict()
    assert set(b) - set(a) == {f"refine.{k}" for k in new_weights}
    assert all(torch.equal(a[k], b[k]) for k in a)
    for loaded in (centre, window):
        torch.manual_seed(1)
        with torch.no_grad():  # the same perturbation of the prompt map, so the head matters
            loaded.model.refine.prompt_proj.weight.add_(torch.randn_like(loaded.model.refine.prompt_proj.weight))
        loaded.model.eval()
    pixels = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_centre_logits(centre, pixels), _centre_logits(window, pixels))


def test_fine_tuning_refuses_to_reshape_the_base_s_head(tmp_path):
    """A base's refinement head is fine-tuned as it is: asking for another window is an error with
    the fix, not a run that silently trains the base's head; leaving the option out keeps it."""
    from TGatedSegmentLib.training.starting_model import extend_for_training

    # a temporal base with a 1-slice head (what a run with --refine-window 1 leaves)
    loaded = build_model("builtin:tiny", tokenizer="compact", preprocessing=PP, refine=RefineConfig(4, window=1))
    assert loaded.model.temporal
    base = {"data": str(tmp_path), "output": str(tmp_path / "run"), "base": str(tmp_path / "ckpt"), "refine": 4}
    with pytest.raises(InputError, match=r"reads this many slices \(1\)") as error:
        extend_for_training(loaded, TrainConfig(**base, refine_window=5))
    assert "--refine-window" in error.value.hint
    kept = extend_for_training(loaded, TrainConfig(**base))  # the recipe's value is not a request
    assert kept.model.refine.config.window == 1
    assert extend_for_training(loaded, TrainConfig(**base, refine_window=1)).model.refine.config.window == 1
    window = build_model(
        "builtin:tiny", tokenizer="compact", preprocessing=PP, refine=RefineConfig(4, window=5, window_mix="linear")
    )
    with pytest.raises(InputError, match=r"mixes its window \(linear\)"):
        extend_for_training(window, TrainConfig(**base, refine_window=5, refine_window_mix="hidden"))


def test_the_window_context_map_is_what_the_window_mix_adds_at_each_centre():
    """``window_context_volume`` streams the volume as inference does and gives, per voxel, the norm of
    what the head's window mix adds for that centre slice (edges replicated); a centre-only head has
    no such map and says so."""
    import SimpleITK as sitk

    from TGatedSegmentLib.evaluation.gate import window_context_volume
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.inference.engine import window_indices
    from TGatedSegmentLib.preprocessing.volume import prepare_volume

    loaded = _model(window=5)
    loaded.model.float()
    segmenter = Segmenter(loaded=loaded, device="cpu", batch_size=2)
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(40, 80, (6, 20, 24)).astype(np.float32))
    got = window_context_volume(segmenter, image, modality="ct")
    assert got.shape == (6, 20, 24) and got.min() >= 0 and got.std() > 0
    unit = prepare_volume(image, segmenter.config.preprocessing, "ct").unit
    head = loaded.model.refine
    for centre in range(6):
        pixels = segmenter.codec.encode(unit[window_indices(centre, 6, 5)])  # (S, 3, H, W)
        with torch.no_grad():
            stems = head.image_stem(pixels[:, :1])  # (S, C, H, W)
            added = head.image_window(stems.flatten(0, 1).unsqueeze(0)).norm(dim=1)  # (1, H, W)
        np.testing.assert_allclose(
            got[centre], segmenter.codec.decode(added, (20, 24))[0].numpy(), rtol=1e-5, atol=1e-6
        )
    with pytest.raises(InputError, match="centre slice only"):
        window_context_volume(Segmenter(loaded=_model(window=1), device="cpu"), image, modality="ct")
