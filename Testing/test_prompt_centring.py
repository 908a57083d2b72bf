"""Prompt centring (``--prompt-centring vocabulary``, the cpu recipe's): a random text encoder's
embeddings are centred on the run's organ prompts before the decoder reads them; the centre is
fitted once, saved with the weights, and kept by fine-tuning."""

from __future__ import annotations

import pytest
import torch
from helpers.datasets import make_dataset

from TGatedSegmentLib.data.dataset import load_dataset
from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.model.checkpoint import load_model, save_checkpoint
from TGatedSegmentLib.model.configuration import TGatedConfig
from TGatedSegmentLib.model.tokenizer import tokenize
from TGatedSegmentLib.training import TrainConfig
from TGatedSegmentLib.training.recipes import CPU, PAPER
from TGatedSegmentLib.training.starting_model import build_training_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_dataset(make_dataset(tmp_path_factory.mktemp("centring") / "ds", cases=1))


def _start(dataset, tmp_path, **settings):
    config = TrainConfig(
        data=dataset.root, output=tmp_path / "run", base="builtin:tiny", recipe="cpu", image_size=32, **settings
    )
    return build_training_model(config, [dataset.organs[i] for i in sorted(dataset.organs)])


def _embeddings(loaded, prompts):
    ids, mask = tokenize(loaded.tokenizer, prompts)
    with torch.no_grad():
        return loaded.model.encode_text(ids, mask)


def _cosines(e: torch.Tensor) -> torch.Tensor:
    e = torch.nn.functional.normalize(e, dim=-1)
    c = e @ e.t()
    return c[~torch.eye(len(e), dtype=torch.bool)]


def test_the_organ_prompts_are_centred_and_keep_their_length(dataset, tmp_path):
    assert CPU["prompt_centring"] == "vocabulary" and PAPER["prompt_centring"] == "none"
    prompts = [dataset.organs[i].prompt for i in sorted(dataset.organs)]
    plain = _start(dataset, tmp_path, prompt_centring="none")
    centred = _start(dataset, tmp_path)
    assert centred.config.prompt_centring and not plain.config.prompt_centring
    before, after = _embeddings(plain, prompts), _embeddings(centred, prompts)
    # the same encoder underneath (same seed): the centring is the only difference, a fixed affine map
    centre, scale = centred.model.prompt_centring.centre, centred.model.prompt_centring.scale
    torch.testing.assert_close(after, (before - centre) * scale)
    torch.testing.assert_close(after.mean(dim=0), torch.zeros_like(centre), atol=1e-5, rtol=0)
    torch.testing.assert_close(after.norm(dim=-1).mean(), before.norm(dim=-1).mean())
    # what the decoder reads now differs between prompts by much more than the random encoder's output did
    assert _cosines(before).min() > 0.3 and _cosines(after).mean() < _cosines(before).mean() - 0.3


def test_the_centre_is_saved_with_the_weights_and_kept_by_fine_tuning(dataset, tmp_path):
    centred = _start(dataset, tmp_path)
    folder = save_checkpoint(centred.model, centred.tokenizer, tmp_path / "ckpt")
    loaded = load_model(folder)
    assert loaded.config.prompt_centring
    prompts = ["liver", "left kidney", "something else"]  # free text goes through the same map
    torch.testing.assert_close(_embeddings(loaded, prompts), _embeddings(centred, prompts), rtol=0, atol=0)
    # fine-tuning keeps the base's centre (its decoder learnt with it) and refuses to drop it when asked to
    organs = [dataset.organs[i] for i in sorted(dataset.organs)]
    config = TrainConfig(data=dataset.root, output=tmp_path / "tune", base=str(folder), recipe="cpu", image_size=32)
    tuned = build_training_model(config, organs)
    assert torch.equal(tuned.model.prompt_centring.centre, centred.model.prompt_centring.centre)
    with pytest.raises(InputError, match="centred") as error:
        build_training_model(
            TrainConfig(data=dataset.root, output=tmp_path / "t2", base=str(folder), prompt_centring="none"), organs
        )
    assert "--prompt-centring" in error.value.hint


def test_checkpoints_written_before_the_option_have_none():
    raw = TGatedConfig(clipseg_config={}).to_dict()
    del raw["prompt_centring"]
    assert TGatedConfig.from_dict(raw).prompt_centring is False


def test_weights_saved_under_the_first_versions_names_still_load(dataset, tmp_path):
    from safetensors.torch import load_file, save_file

    centred = _start(dataset, tmp_path)
    folder = save_checkpoint(centred.model, centred.tokenizer, tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    # the first version kept the two buffers on the model itself: prompt_centre, prompt_scale
    state["prompt_centre"] = state.pop("prompt_centring.centre")
    state["prompt_scale"] = state.pop("prompt_centring.scale")
    save_file(state, str(weights))
    loaded = load_model(folder)
    prompts = ["liver", "left kidney"]
    torch.testing.assert_close(_embeddings(loaded, prompts), _embeddings(centred, prompts), rtol=0, atol=0)
