"""What the residual adapter's temporal transformer reads: the slices' tokens, or slice differences."""

from __future__ import annotations

import pytest
import torch

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.model.adapter import TemporalAdapter
from TGatedSegmentLib.model.checkpoint import load_model
from TGatedSegmentLib.model.configuration import AdapterConfig
from TGatedSegmentLib.training.config import TrainConfig
from TGatedSegmentLib.training.starting_model import extend_for_training, new_adapter_config


def _adapter(temporal_input: str) -> TemporalAdapter:
    torch.manual_seed(0)
    config = AdapterConfig.default_for(32, num_heads=4, num_layers=2, temporal_input=temporal_input)
    return TemporalAdapter(config, hidden_size=32).eval()


def test_differences_feed_each_neighbour_as_its_change_from_the_centre_slice():
    differences, slices = _adapter("differences"), _adapter("slices")
    slices.load_state_dict(differences.state_dict())  # the same weights: the input is all that differs
    torch.manual_seed(1)
    window = torch.randn(2, 5, 7, 32)  # (B, S, T, C)
    by_hand = window - window[:, 2:3]
    by_hand[:, 2] = window[:, 2]
    with torch.no_grad():
        assert torch.allclose(differences.temporal(window), slices.temporal(by_hand), atol=1e-6)
        assert not torch.allclose(differences.temporal(window), slices.temporal(window), atol=1e-3)
        # a fresh residual adapter is still the identity on the centre slice's tokens
        assert torch.equal(differences(window), window[:, 2])


def test_the_input_is_saved_with_the_adapter_and_older_configs_read_slices():
    config = AdapterConfig.default_for(32, temporal_input="differences")
    assert AdapterConfig.from_dict(config.to_dict()).temporal_input == "differences"
    assert AdapterConfig.from_dict({"proj_dim": 32, "mode": "residual"}).temporal_input == "slices"
    with pytest.raises(ValueError, match="temporal_input must be one of"):
        AdapterConfig(temporal_input="deltas")
    with pytest.raises(ValueError, match="authors' wiring"):
        AdapterConfig(mode="reference", temporal_input="differences")


def test_adapter_input_option_reaches_a_new_adapter_and_lapses_where_there_is_none():
    config = TrainConfig(data="d", output="o", recipe="cpu", adapter_input="differences")
    assert new_adapter_config(config, 32).temporal_input == "differences"
    control = TrainConfig(data="d", output="o", recipe="cpu", adapter="control", adapter_input="differences")
    assert new_adapter_config(control, 32).temporal_input == "differences"  # 5 copies of the centre: zeros
    assert TrainConfig(data="d", output="o", recipe="paper").adapter_input == "slices"
    for other in ({"adapter": "reference", "refine": 0}, {"temporal": False}):
        assert TrainConfig(data="d", output="o", recipe="cpu", **other).adapter_input == "slices"
    with pytest.raises(InputError, match="--adapter-input differences is read by the residual adapter"):
        TrainConfig(data="d", output="o", recipe="cpu", adapter="reference", refine=0, adapter_input="differences")
    with pytest.raises(InputError, match="no temporal adapter"):
        TrainConfig(data="d", output="o", recipe="cpu", temporal=False, adapter_input="differences")


def test_fine_tuning_keeps_the_bases_adapter_input_and_refuses_another(tiny_checkpoint, tmp_path):
    loaded = load_model(tiny_checkpoint)
    assert loaded.model.adapter.config.temporal_input == "slices"
    same = TrainConfig(data="d", output=str(tmp_path / "a"), base=str(tiny_checkpoint), adapter_input="slices")
    extend_for_training(loaded, same)
    other = TrainConfig(data="d", output=str(tmp_path / "b"), base=str(tiny_checkpoint), adapter_input="differences")
    with pytest.raises(InputError, match="--adapter-input differences: the base's adapter reads"):
        extend_for_training(loaded, other)
