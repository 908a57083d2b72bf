"""The T-Gated model: parameter layout, the authors' forward, initialisation and the baseline path."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from TGatedSegmentLib.model.adapter import TemporalAdapter
from TGatedSegmentLib.model.checkpoint import load_model, load_state_dict_checked
from TGatedSegmentLib.model.configuration import AdapterConfig
from TGatedSegmentLib.model.convert_reference import convert_reference_state_dict
from TGatedSegmentLib.model.tokenizer import tokenize

# --- an independent statement of the authors' CLIPSegTemporalAdapter, from its documented layout ----
# (../shared/reference/README.md and docs/model-notes.md section 1): written separately from the
# package so that a layout or ordering mistake in the package shows up as a logits mismatch.


class _RefTemporalLayer(nn.Module):
    def __init__(self, d, heads, ff, p):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=p, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(p), nn.Linear(ff, d), nn.Dropout(p))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x):  # eval mode: drop-path is the identity
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)[0]
        return x + self.ff(self.norm2(x))


class _RefSpatial(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Dropout(0.1), nn.Linear(2 * c, c), nn.Dropout(0.1))

    def forward(self, x):
        y = self.norm1(x)
        x = x + self.attn(y, y, y)[0]
        return x + self.mlp(self.norm2(x))


class ReferenceTemporalAdapter(nn.Module):
    """Keys: base_model.* plus the adapter at top level, as the authors' state dicts have them."""

    def __init__(self, base_model, c, d=32, s=5, heads=8, layers=4):
        super().__init__()
        self.base_model, self.s = base_model, s
        self.proj_in = nn.Sequential(nn.Linear(c, d, bias=False), nn.LayerNorm(d))
        self.proj_out = nn.Linear(d, c, bias=False)
        self.temporal_pos_emb = nn.Parameter(torch.randn(1, s, d) * 0.02)
        self.temporal_layers = nn.ModuleList(_RefTemporalLayer(d, heads, 4 * d, 0.1) for _ in range(layers))
        self.transformer_norm = nn.LayerNorm(d)
        self.gate_proj = nn.Linear(c, c)
        self.spatial_context = _RefSpatial(c, heads)
        self.mlp_head = nn.Sequential(
            nn.Linear(c, c), nn.LayerNorm(c), nn.GELU(), nn.Dropout(0.1), nn.Linear(c, c), nn.Dropout(0.05)
        )

    def forward(self, pixel_values, input_ids, attention_mask):
        b, s = pixel_values.shape[:2]
        tokens = self.base_model.clip.vision_model(pixel_values.flatten(0, 1)).last_hidden_state
        t, c = tokens.shape[1:]
        tokens = tokens.view(b, s, t, c)
        x = tokens.permute(0, 2, 1, 3).reshape(b * t, s, c)
        x = self.proj_in(x) + self.temporal_pos_emb
        for layer in self.temporal_layers:
            x = layer(x)
        x = self.proj_out(self.transformer_norm(x)).view(b, t, s, c)
        temporal, raw = x[:, :, s // 2], tokens[:, s // 2]
        gate = torch.sigmoid(self.gate_proj(temporal))
        centre = self.mlp_head(self.spatial_context(gate * temporal + (1 - gate) * raw))
        pooled = self.base_model.clip.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        text = self.base_model.clip.text_projection(pooled)
        return self.base_model.decoder(hidden_states=[centre], conditional_embeddings=text).logits.unsqueeze(1)


@pytest.fixture(scope="module")
def tiny(tiny_reference_checkpoint):
    """The authors' wiring (the parity tests); ``tiny_residual`` is the default for new models."""
    return load_model(tiny_reference_checkpoint)


@pytest.fixture(scope="module")
def tiny_residual(tiny_checkpoint):
    return load_model(tiny_checkpoint)


def test_adapter_layout_matches_authors_real_size(shared_dir):
    layout = json.loads(
        (shared_dir / "reference" / "tgated-reference-adapter-layout.json").read_text(encoding="utf-8")
    )["adapter_keys"]
    adapter = TemporalAdapter(AdapterConfig.default_for(768), hidden_size=768)
    ours = {k: list(v.shape) for k, v in adapter.state_dict().items()}
    assert ours == layout
    assert sum(p.numel() for p in adapter.parameters()) == 10_054_912  # the authors' count


def test_paper_defaults_and_tiny_scaling():
    paper = AdapterConfig.default_for(768)
    assert (paper.proj_dim, paper.num_heads, paper.num_layers, paper.ffn_dim, paper.context_size) == (
        256,
        8,
        4,
        1024,
        5,
    )
    tiny = AdapterConfig.default_for(32)
    assert (tiny.proj_dim, tiny.ffn_dim) == (32, 128)
    with pytest.raises(ValueError):
        AdapterConfig(context_size=4)


def test_gate_initialisation_and_drop_path_schedule(tiny):
    adapter = tiny.model.adapter
    assert torch.count_nonzero(adapter.gate_proj.weight) == 0
    assert torch.allclose(adapter.gate_proj.bias, torch.full_like(adapter.gate_proj.bias, -5.0))
    rates = [layer.drop_path.p for layer in adapter.temporal_layers]
    assert rates == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])
    # gate penalty: mean(s(1-s)) with s = sigmoid(-5)
    s = torch.sigmoid(torch.tensor(-5.0))
    assert tiny.model.gate_penalty().item() == pytest.approx((s * (1 - s)).item(), rel=1e-6)


def test_residual_gate_starts_open_and_the_branch_at_zero(tiny_residual):
    adapter = tiny_residual.model.adapter
    assert adapter.config.mode == "residual" and adapter.residual
    assert torch.count_nonzero(adapter.gate_proj.weight) == 0
    assert torch.all(adapter.gate_proj.bias == 0.0)  # sigmoid(0) = 0.5
    last = adapter.mlp_head[4]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0


def test_residual_mode_at_initialisation_is_the_slice_wise_baseline(tiny_residual, tiny_baseline_checkpoint):
    """Same CLIPSeg weights: the fresh residual T-Gated model computes the baseline's logits exactly,
    reads the same three activations, and its temporal branch gets gradient after one update."""
    baseline = load_model(tiny_baseline_checkpoint).model.eval()
    model = tiny_residual.model
    model.base_model.load_state_dict(baseline.base_model.state_dict())
    assert model.num_activations == baseline.num_activations == 3
    torch.manual_seed(3)
    pixels = torch.randn(2, 5, 3, 64, 64)
    ids, mask = tokenize(tiny_residual.tokenizer, ["liver", "left kidney"])
    with torch.no_grad():
        assert torch.equal(model.eval()(pixels, ids, mask), baseline(pixels[:, 2], ids, mask))
    model.train()
    optimizer = torch.optim.SGD(model.adapter.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(pixels, ids, mask).square().mean().backward()
        optimizer.step()
    assert model.adapter.temporal_layers[0].ff[0].weight.grad.abs().sum() > 0
    model.eval()


def test_refinement_head_is_off_in_the_authors_mode():
    from TGatedSegmentLib.model.configuration import RefineConfig, TGatedConfig

    with pytest.raises(ValueError, match="refinement head"):
        TGatedConfig(clipseg_config={}, adapter=AdapterConfig(mode="reference"), refine=RefineConfig())
    assert AdapterConfig.from_dict({"proj_dim": 32, "num_heads": 8}).mode == "reference"  # configs from before modes


def test_authors_state_dict_loads_strictly_and_gives_their_logits(tiny):
    torch.manual_seed(1)
    ours = tiny.model.eval()
    reference = ReferenceTemporalAdapter(ours.base_model, c=32, d=ours.adapter.config.proj_dim).eval()
    with torch.no_grad():  # randomise everything so that no ordering mistake can hide behind zeros
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    authors_sd = reference.state_dict()
    assert not any(k.startswith("adapter.") for k in authors_sd)
    load_state_dict_checked(ours, convert_reference_state_dict({"model_state_dict": authors_sd}), "authors")

    pixels = torch.randn(2, 5, 3, 352, 352)
    ids = tiny.tokenizer(["liver", "left kidney"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        expected = reference(pixels, ids["input_ids"], ids["attention_mask"]).squeeze(1)
        short_ids, short_mask = tokenize(tiny.tokenizer, ["liver", "left kidney"])  # padded to the longest
        got = ours(pixels, short_ids, short_mask)
    scale = expected.abs().max()
    assert torch.allclose(got, expected, atol=1e-5 * scale, rtol=0)


def test_mismatched_state_dict_names_the_keys(tiny):
    sd = dict(tiny.model.state_dict())
    sd["adapter.gate_proj.weight"] = torch.zeros(8, 8)
    sd.pop("adapter.proj_out.weight")
    sd["adapter.bogus"] = torch.zeros(1)
    from TGatedSegmentLib.errors import CheckpointError

    with pytest.raises(CheckpointError) as info:
        load_state_dict_checked(tiny.model, sd, "bad.pt")
    text = str(info.value)
    assert "adapter.gate_proj.weight (8, 8) vs (32, 32)" in text
    assert "adapter.proj_out.weight" in text and "adapter.bogus" in text


def test_baseline_is_stock_clipseg(tiny_baseline_checkpoint):
    loaded = load_model(tiny_baseline_checkpoint)
    assert loaded.model.adapter is None and loaded.model.context_size == 1
    pixels = torch.randn(2, 3, 352, 352)
    ids, mask = tokenize(loaded.tokenizer, ["liver", "spleen"])
    with torch.no_grad():
        ours = loaded.model(pixels, ids, mask)
        stock = loaded.model.base_model(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
    assert torch.equal(ours, stock)


def test_encoders_receive_gradients_in_training(tiny):
    """The authors' baseline silently froze its encoders (HF no_grad); ours must not."""
    model = tiny.model.train()
    pixels = torch.randn(1, 5, 3, 352, 352)
    ids, mask = tokenize(tiny.tokenizer, ["liver"])
    model(pixels, ids, mask).mean().backward()
    clip = model.base_model.clip
    assert clip.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None
    assert clip.text_model.encoder.layers[0].mlp.fc1.weight.grad is not None
    assert model.adapter.temporal_pos_emb.grad is not None
    model.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize(
    "name,file", [("tiny", "clipseg-tiny.config.json"), ("rd64-refined", "clipseg-rd64-refined.config.json")]
)
def test_builtin_architectures_match_the_reference_configs(shared_dir, name, file):
    from transformers import CLIPSegConfig

    from TGatedSegmentLib.model.architectures import builtin_config

    reference = CLIPSegConfig.from_json_file(str(shared_dir / "reference" / file)).to_dict()
    ours = builtin_config(f"builtin:{name}").to_dict()
    for key in ("architectures", "transformers_version", "_name_or_path"):
        reference.pop(key, None), ours.pop(key, None)
    assert ours == reference


@pytest.mark.parametrize("conditional_layer", [0, 2])
def test_decode_shares_the_prompt_free_decoder_layers_and_equals_stock_clipseg(conditional_layer):
    """``decode`` runs the layers before the FiLM once per slice and the rest per (slice, prompt):
    the same logits as CLIPSeg's decoder run on every pair."""
    from transformers import CLIPSegForImageSegmentation

    from TGatedSegmentLib.model.architectures import builtin_config
    from TGatedSegmentLib.model.configuration import TGatedConfig
    from TGatedSegmentLib.model.modeling import TGatedCLIPSeg

    clipseg = builtin_config("builtin:cpu")
    clipseg.conditional_layer = conditional_layer
    torch.manual_seed(0)
    model = TGatedCLIPSeg(TGatedConfig(clipseg_config=clipseg.to_dict()), CLIPSegForImageSegmentation(clipseg)).eval()
    features = torch.randn(3, 3, 257, 64)  # (B, L, T, C)
    text = torch.randn(4, 64)  # (K, P)
    items = torch.tensor([[0, 0], [0, 3], [1, 1], [2, 0], [2, 2], [1, 3]])
    with torch.no_grad():
        ours = model.decode(features, text, items=items)
        stock = model.base_model.decoder(
            hidden_states=list(features[items[:, 0]].unbind(1)), conditional_embeddings=text[items[:, 1]]
        ).logits
    stock = torch.nn.functional.interpolate(stock.unsqueeze(1), size=(128, 128), mode="bilinear").squeeze(1)
    assert ours.shape == (6, 128, 128)
    torch.testing.assert_close(ours, stock, rtol=1e-4, atol=1e-5)


def test_loading_a_checkpoint_initialises_nothing_and_rebuilds_the_position_ids(tiny_baseline_checkpoint, monkeypatch):
    """Full checkpoints are built on the meta device and adopt the file's tensors (issue 12's fixed cost)."""
    calls = []
    monkeypatch.setattr(nn.Linear, "reset_parameters", lambda self: calls.append(self.weight.is_meta))
    loaded = load_model(tiny_baseline_checkpoint)
    assert not any(t.is_meta for t in list(loaded.model.parameters()) + list(loaded.model.buffers()))
    assert calls and all(calls)  # the initialisers saw meta tensors only: no memory, no random numbers
    for name, buffer in loaded.model.named_buffers():
        if name.endswith("position_ids"):
            assert torch.equal(buffer, torch.arange(buffer.shape[-1]).expand(buffer.shape))


def test_the_authors_wiring_on_a_late_conditioning_architecture_still_reads_the_prompt():
    """builtin:cpu conditions before its last decoder layer; the authors' wiring runs only the first."""
    from TGatedSegmentLib.model.checkpoint import build_model

    adapter = AdapterConfig.default_for(64, mode="reference", num_heads=2, num_layers=1)
    loaded = build_model("builtin:cpu", "compact", adapter=adapter, seed=0)
    model = loaded.model.eval()
    features = torch.randn(2, 1, 257, 64)
    with torch.no_grad():
        logits = model.decode(features, torch.randn(3, 64), items=torch.tensor([[0, 0], [0, 1], [1, 2]]))
    assert logits.shape == (3, 128, 128) and not torch.equal(logits[0], logits[1])


def test_new_residual_adapters_rewrite_the_activation_the_decoder_conditions():
    """The residual branch goes where the FiLM reads: the last activation for CLIPSeg (conditional
    layer 0), the first for builtin:cpu (conditional layer 2); the others pass through untouched."""
    from TGatedSegmentLib.model.clipseg_base import load_clipseg_config
    from TGatedSegmentLib.model.modeling import conditioned_activation
    from TGatedSegmentLib.training.config import TrainConfig
    from TGatedSegmentLib.training.starting_model import new_adapter_config

    assert conditioned_activation(load_clipseg_config("builtin:rd64-refined")) == 2
    assert conditioned_activation(load_clipseg_config("builtin:cpu")) == 0
    config = TrainConfig(data="d", output="o", base="builtin:cpu")
    adapter = new_adapter_config(config, 64, "builtin:cpu", load_clipseg_config("builtin:cpu"))
    assert adapter.activation == 0 and adapter.mode == "residual"
    with pytest.raises(ValueError):
        AdapterConfig(mode="reference", activation=0)

    from TGatedSegmentLib.model.checkpoint import build_model

    model = build_model("builtin:cpu", "compact", adapter=adapter, seed=0).model.eval()
    torch.manual_seed(1)
    window = torch.randn(2, 5, 3, 257, 64)  # (B, S, L, T, C)
    with torch.no_grad():
        assert torch.equal(model.fuse(window), window[:, 2])  # a fresh branch adds exactly nothing
        model.adapter.mlp_head[4].bias.fill_(0.5)
        fused = model.fuse(window)
    assert not torch.equal(fused[:, 0], window[:, 2, 0])
    assert torch.equal(fused[:, 1:], window[:, 2, 1:])


def test_the_encoder_stops_after_its_deepest_extract_layer_with_stock_clipseg_numbers():
    """rd64-refined reads layers 3, 6 and 9 of 12 (0-based): the last two are never run, and the
    decoder still gets the very states (and logits) transformers' CLIPSeg computes with all 12."""
    from transformers import CLIPSegForImageSegmentation

    from TGatedSegmentLib.model.architectures import builtin_config
    from TGatedSegmentLib.model.configuration import TGatedConfig
    from TGatedSegmentLib.model.modeling import TGatedCLIPSeg
    from TGatedSegmentLib.model.tokenizer import compact_clip_tokenizer

    clipseg = builtin_config("builtin:tiny")
    clipseg.vision_config.num_hidden_layers = 6  # extract layers [1, 2, 3]: layers 4 and 5 are unread
    torch.manual_seed(0)
    config = TGatedConfig(clipseg_config=clipseg.to_dict(), adapter=None)  # the slice-wise baseline
    model = TGatedCLIPSeg(config, CLIPSegForImageSegmentation(clipseg)).eval()
    vision = model.base_model.clip.vision_model
    ran = []
    for k, layer in enumerate(vision.encoder.layers):
        layer.register_forward_hook(lambda *_, k=k: ran.append(k))
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = model.vision_tokens(pixels)
        assert ran == [0, 1, 2, 3]
        ran.clear()
        states = vision(pixel_values=pixels, output_hidden_states=True).hidden_states
        assert ran == [0, 1, 2, 3, 4, 5]
        assert torch.equal(ours, torch.stack([states[i + 1] for i in clipseg.extract_layers], dim=1))
        ids, mask = tokenize(compact_clip_tokenizer(), ["liver", "spleen"])
        logits = model(pixels, ids, mask)
        stock = model.base_model(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
    assert torch.equal(logits, stock)
