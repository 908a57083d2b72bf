"""Training with --finetune decoder|adapters, --peft and --probabilistic (tiny random models).

A "pretrained" base here is a tiny random CLIPSeg saved with ``save_pretrained`` (plus a
tokenizer): a folder that reloads to the same weights, as a hub id would.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers.datasets import make_dataset
from helpers.training import CancelAfterPolls, assert_same_weights, fast_settings
from safetensors.torch import load_file

from TGatedSegmentLib.errors import Cancelled, CheckpointError, InputError
from TGatedSegmentLib.inference.api import Segmenter
from TGatedSegmentLib.model.checkpoint import build_model, init_checkpoint, load_model
from TGatedSegmentLib.model.configuration import PreprocessConfig
from TGatedSegmentLib.model.probabilistic import ProbabilisticSelfAttention
from TGatedSegmentLib.model.tokenizer import tokenize
from TGatedSegmentLib.training import TrainConfig, resume_config, train
from TGatedSegmentLib.training.config import structural_differences
from TGatedSegmentLib.training.optim import GROUPS, PEFT_GROUP, make_optimizer, set_train_mode_for
from TGatedSegmentLib.training.starting_model import build_training_model
from TGatedSegmentLib.training.step import StepRunner

FAST = fast_settings(without=("base", "tokenizer"), samples_per_epoch=20)
ORGANS = ("liver", "spleen", "left kidney")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ft") / "ds", cases=1, depth=10, size=24)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ft-cache")


@pytest.fixture(scope="module")
def clipseg_base(tmp_path_factory) -> Path:
    """A reloadable CLIPSeg folder (what a hub id is): tiny random weights + a tokenizer."""
    folder = tmp_path_factory.mktemp("clipseg") / "tiny-clipseg"
    loaded = build_model("builtin:tiny", "compact", temporal=False, seed=5)  # PyTorch init for the decoder
    loaded.model.base_model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def cfg(data, cache_dir, output, **kw) -> TrainConfig:
    return TrainConfig(data=data, output=output, cache_dir=cache_dir, **{**FAST, **kw})


def meta(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def base_weights(folder: Path) -> dict:
    from transformers import CLIPSegForImageSegmentation

    return CLIPSegForImageSegmentation.from_pretrained(folder).state_dict()


# --------------------------------------------------------------------------- what trains, what is saved


@pytest.mark.parametrize("peft", ["dense", "shallow"])
def test_adapter_mode_trains_only_adapters_and_saves_only_them(peft, data, cache_dir, clipseg_base, tmp_path):
    run = train(
        cfg(
            data, cache_dir, tmp_path / "run", base=str(clipseg_base), finetune="adapters", peft=peft, steps=4, epochs=1
        )
    )
    raw = meta(run / "last")
    assert raw["partial_weights"] is True and raw["base_model_id"] == str(clipseg_base)
    assert raw["training"]["weights"]["stored"] == "trained parameters only"
    stored = load_file(str(run / "last" / "model.safetensors"))
    assert stored and all(k.startswith(("adapter.", "peft.")) for k in stored)  # nothing of CLIP or the decoder
    reloaded = load_model(run / "last").model  # through the public loader: base folder + adapter file
    assert reloaded.peft is not None and reloaded.peft.config.variant == peft
    # CLIP and the decoder are bit-identical to the base ...
    reference = base_weights(clipseg_base)
    state = reloaded.state_dict()
    frozen = [k for k in state if k.startswith("base_model.")]
    assert frozen and all(torch.equal(state[k], reference[k.removeprefix("base_model.")]) for k in frozen)
    # ... and what trained did move (the last PEFT layer starts at zero), and is what the file holds
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    moved = [k for k in stored if k.startswith("peft.") and k.endswith("fc2.weight") and stored[k].abs().max() > 0]
    assert moved
    full = sum(v.numel() * v.element_size() for v in state.values())
    assert (run / "last" / "model.safetensors").stat().st_size < 0.3 * full
    # the base model that was handed to the PEFT hooks has no stale hooks: one adapter application each
    hooks = sum(len(m._forward_hooks) for m in reloaded.base_model.modules())
    assert hooks == (len(reloaded.peft.vision_dense or []) + len(reloaded.peft.text_dense or []))


def test_decoder_mode_freezes_clip_and_the_old_flag_is_its_alias(data, cache_dir, clipseg_base, tmp_path):
    old = TrainConfig(data=data, output=tmp_path / "x", freeze_encoders=True)
    assert old.finetune == "decoder" and old.freeze_encoders
    assert TrainConfig(data=data, output=tmp_path / "x", finetune="adapters").freeze_encoders
    # a run saved before --finetune existed resumes as the mode it was
    saved = {
        k: v
        for k, v in old.to_dict().items()
        if k not in ("finetune", "peft", "peft_dim", "peft_parts", "lr_peft", "probabilistic")
    }
    assert structural_differences(saved, old) == []
    assert structural_differences({**saved, "freeze_encoders": False}, old)

    run = train(cfg(data, cache_dir, tmp_path / "run", base=str(clipseg_base), freeze_encoders=True, steps=3, epochs=1))
    stored = load_file(str(run / "last" / "model.safetensors"))
    assert any(k.startswith("base_model.decoder.") for k in stored)
    assert not any(k.startswith("base_model.clip.") for k in stored)
    state = load_model(run / "best").model.state_dict()
    reference = base_weights(clipseg_base)
    clip = [k for k in state if k.startswith("base_model.clip.")]
    assert all(torch.equal(state[k], reference[k.removeprefix("base_model.")]) for k in clip)
    assert not torch.equal(state["base_model.decoder.film_mul.weight"], reference["decoder.film_mul.weight"])


def test_checkpoint_identity_rules(data, cache_dir, clipseg_base, tmp_path):
    # a tgated init folder on a reloadable base: its CLIP weights are that base's -> the base is the identity
    initial = init_checkpoint(clipseg_base, tmp_path / "init", seed=1, preprocessing=PreprocessConfig(image_size=32))
    run = train(
        cfg(data, cache_dir, tmp_path / "a", base=str(initial), finetune="adapters", steps=2, epochs=1, image_size=None)
    )
    assert meta(run / "last")["base_model_id"] == str(clipseg_base)
    # a checkpoint whose frozen weights are its own (a random base here) -> the checkpoint folder itself
    random_init = init_checkpoint(
        "builtin:tiny", tmp_path / "rinit", tokenizer="compact", seed=1, preprocessing=PreprocessConfig(image_size=32)
    )
    run = train(
        cfg(
            data,
            cache_dir,
            tmp_path / "b",
            base=str(random_init),
            finetune="adapters",
            steps=2,
            epochs=1,
            image_size=None,
        )
    )
    raw = meta(run / "last")
    assert raw["partial_weights"] and raw["base_model_id"] == str(random_init)
    assert load_model(run / "last").model.temporal
    # a random architecture has nothing to reload from: full weights, and the metadata says why
    run = train(
        cfg(
            data,
            cache_dir,
            tmp_path / "c",
            base="builtin:tiny",
            tokenizer="compact",
            finetune="adapters",
            steps=2,
            epochs=1,
        )
    )
    raw = meta(run / "last")
    assert raw["partial_weights"] is False and "random weights" in raw["training"]["weights"]["note"]
    # a base that changed after training is noticed on loading (the fingerprint of the weights taken from it)
    weights = load_file(str(random_init / "model.safetensors"))
    weights["base_model.clip.vision_model.encoder.layers.0.mlp.fc1.weight"] += 1e-3
    from safetensors.torch import save_file

    save_file(weights, str(random_init / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not the one"):
        load_model(tmp_path / "b" / "last")


# --------------------------------------------------------------------------- resume in every mode


@pytest.mark.parametrize(
    "mode",
    [dict(finetune="decoder"), dict(finetune="adapters", peft="shallow", probabilistic=True)],
    ids=["decoder", "adapters-shallow-probabilistic"],
)
def test_partial_runs_resume_to_the_same_weights(mode, data, cache_dir, clipseg_base, tmp_path):
    settings = dict(base=str(clipseg_base), **mode)
    whole = train(cfg(data, cache_dir, tmp_path / "whole", **settings))
    token = CancelAfterPolls(1 + 5 + 1 + 2)  # stops before step 8 of 10
    with pytest.raises(Cancelled):
        train(cfg(data, cache_dir, tmp_path / "cut", **settings), cancel=token)
    assert meta(tmp_path / "cut" / "resume")["partial_weights"] is True
    assert meta(tmp_path / "cut" / "last")["training"]["step"] == 7
    train(resume_config(tmp_path / "cut"))
    assert_same_weights(tmp_path / "cut" / "last", whole / "last")
    assert_same_weights(tmp_path / "cut" / "best", whole / "best")


# --------------------------------------------------------------------------- probabilistic attention


def test_probabilistic_run_from_a_deterministic_checkpoint(data, cache_dir, tmp_path, monkeypatch):
    deterministic = init_checkpoint(
        "builtin:tiny", tmp_path / "det", tokenizer="compact", seed=2, preprocessing=PreprocessConfig(image_size=32)
    )
    config = cfg(
        data, cache_dir, tmp_path / "run", base=str(deterministic), probabilistic=True, image_size=None, epochs=3
    )
    # the extended starting model: the deterministic weights are the means, var_proj at its init, and
    # without sampling it computes exactly what the deterministic checkpoint computes
    det = load_model(deterministic)
    start = build_training_model(config, list(det.config.vocabulary)).model.eval()
    attention = start.adapter.temporal_layers[0].self_attn
    assert isinstance(attention, ProbabilisticSelfAttention)
    assert torch.equal(attention.in_proj_weight, det.model.adapter.temporal_layers[0].self_attn.in_proj_weight)
    assert torch.equal(attention.var_proj.weight, torch.zeros_like(attention.var_proj.weight))
    ids, mask = tokenize(det.tokenizer, ["liver", "spleen"])
    pixels = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(start(pixels, ids, mask), det.model.eval()(pixels, ids, mask), atol=1e-5)

    run = train(config)
    trained = load_model(run / "last").model
    assert trained.adapter.config.probabilistic
    # the value variances left their (constant) init: token-dependent now
    layer = trained.adapter.temporal_layers[0].self_attn
    tokens = torch.randn(64, 5, layer.embed_dim)
    with torch.no_grad():
        variances = torch.nn.functional.softplus(layer.var_proj(tokens)).chunk(2, dim=-1)[1]
    # (var_proj's weights start at exactly 0 and only a gradient moves them; the variances start in
    # softplus' flat tail, so 10 steps move them little: ~1e-6 on 1e-3, measured)
    assert layer.var_proj.weight.abs().max() > 0
    assert float((variances - layer.init_variance).abs().max()) > 1e-8
    assert float(variances.std()) > 1e-9

    volume = str(data / "imagesTr" / "case0_0000.nii.gz")
    seg = Segmenter(run / "last", device="cpu", precision="fp32")  # float weights: the test opens the gate below
    torch.manual_seed(0)
    result = seg.segment(volume, prompts="liver, spleen", uncertainty=4)
    assert "probabilistic" in result.uncertainty["method"] and float(result.mutual_information.max()) > 1e-8

    # Monte Carlo with every dropout off: any disagreement between samples comes from the sampled values.
    # The gate, still nearly closed after 15 steps (sigmoid(-5)), lets ~1% of the temporal path through,
    # which is where the sampling happens; opened, the sampled values' effect is plain to see.
    with torch.no_grad():
        seg.model.adapter.gate_proj.bias.fill_(5.0)
    for module in seg.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "p") and type(module).__name__ == "DropPath":
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    torch.manual_seed(0)
    sampled = seg.segment(volume, prompts="liver, spleen", uncertainty=4)
    print(
        "max MI: dropout + sampling",
        result.mutual_information.max(),
        "sampling only, gate open",
        sampled.mutual_information.max(),
    )
    assert float(sampled.mutual_information.max()) > 1e-8  # (tiny: variances 1e-3, confident predictions)
    original = ProbabilisticSelfAttention.forward

    def no_sampling(self, *args, **kwargs):  # and with value sampling off as well, the samples agree
        self.sample = False
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ProbabilisticSelfAttention, "forward", no_sampling)
    torch.manual_seed(0)
    quiet = seg.segment(volume, prompts="liver, spleen", uncertainty=4)
    print("max MI without sampling", quiet.mutual_information.max())
    assert float(quiet.mutual_information.max()) < 1e-9  # identical samples: no disagreement at all


# --------------------------------------------------------------------------- optimiser and no_grad


def _model(peft=None, probabilistic=False, finetune="full", lr_peft=None):
    config = TrainConfig(
        data="d",
        output="o",
        recipe="paper",
        image_size=32,
        peft=peft,
        probabilistic=probabilistic,
        finetune=finetune,
        lr_peft=lr_peft,
        tokenizer="compact",
        base="builtin:tiny",
    )
    from TGatedSegmentLib.vocabulary import lookup

    loaded = build_training_model(config, [lookup(o) for o in ORGANS])
    loaded.model.set_finetune(finetune)
    return loaded, config


@pytest.mark.parametrize(
    "finetune,peft,groups",
    [
        ("full", "dense", (set(GROUPS) - {"refine"}) | {PEFT_GROUP}),  # the paper recipe: no refinement head
        ("decoder", "dense", {"decoder", "adapter", PEFT_GROUP}),
        ("adapters", "shallow", {"adapter", PEFT_GROUP}),
        ("adapters", None, {"adapter"}),
    ],
)
def test_optimizer_groups_per_mode(finetune, peft, groups):
    loaded, config = _model(peft=peft, finetune=finetune)
    model = loaded.model
    optimizer = make_optimizer(model, config)
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert set(by_name) == groups
    in_groups = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert len(in_groups) == len(set(in_groups)) == len(trained)  # every trained parameter, exactly once
    assert set(in_groups) == {id(p) for p in trained}  # and no frozen one
    names = {id(p): n for n, p in model.named_parameters()}
    if peft:
        assert {names[id(p)] for p in by_name[PEFT_GROUP]["params"]} == {
            n for n, p in model.named_parameters() if n.startswith("peft.")
        }
        assert by_name[PEFT_GROUP]["lr"] == {"dense": 1e-3, "shallow": 3e-4}[peft]  # VLSM-Adapter's rates
    if finetune != "full":
        assert not any(names[i].startswith("base_model.clip.") for i in in_groups)
    if finetune == "adapters":
        assert not any(names[i].startswith("base_model.") for i in in_groups)


def test_lr_peft_overrides_the_default():
    loaded, config = _model(peft="dense", finetune="adapters", lr_peft=2e-4)
    groups = {g["name"]: g for g in make_optimizer(loaded.model, config).param_groups}
    assert groups[PEFT_GROUP]["lr"] == 2e-4 and groups["adapter"]["lr"] == config.lr_adapter == 5e-5


def _step_records_grad_mode(loaded, config, finetune):
    model = loaded.model
    set_train_mode_for(model, finetune)
    ids, mask = tokenize(loaded.tokenizer, list(ORGANS))
    step = StepRunner(model, make_optimizer(model, config), config, ids, mask)
    modes, outputs = [], []

    def pre(module, args, kwargs):
        modes.append(torch.is_grad_enabled())

    def post(module, args, kwargs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    # an encode runs from the patch embedding to the deepest layer the decoder reads (not always the last)
    vision = model.base_model.clip.vision_model
    deepest = vision.encoder.layers[max(model.base_model.config.extract_layers)]
    h1 = vision.embeddings.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = deepest.register_forward_hook(post, with_kwargs=True)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "pixels": torch.randn(2, 5, 3, 32, 32, generator=generator),
        "target": (torch.rand(2, 32, 32, generator=generator) > 0.7).float(),
        "prompt": torch.tensor([0, 1]),
    }
    step(batch)
    h1.remove(), h2.remove()
    return modes, outputs, batch


@pytest.mark.parametrize(
    "finetune,peft,no_grad",
    [
        ("adapters", "shallow", True),  # frozen ViT, adapters after it: encode under no_grad
        ("decoder", None, True),
        ("adapters", "dense", False),  # adapters inside the ViT need gradients through it
        ("full", None, False),
    ],
)
def test_vision_encoder_runs_under_no_grad_when_allowed(finetune, peft, no_grad):
    loaded, config = _model(peft=peft, finetune=finetune)
    assert loaded.model.vision_without_grad is no_grad
    modes, outputs, _ = _step_records_grad_mode(loaded, config, finetune)
    assert modes == [not no_grad]  # one encoder call (5 slices x 2 samples batched), in the expected grad mode
    assert (outputs[0].grad_fn is None) is no_grad


def test_no_grad_encoder_gives_the_same_step():
    """The no_grad path changes cost, not results: same loss and same updated weights."""
    results = []
    for flag in (True, False):
        loaded, config = _model(peft="shallow", finetune="adapters")
        loaded.model.vision_without_grad = flag
        _step_records_grad_mode(loaded, config, "adapters")
        results.append({k: v.clone() for k, v in loaded.model.state_dict().items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


# --------------------------------------------------------------------------- bad combinations


def test_bad_combinations_are_rejected_before_anything_is_written(data, tmp_path):
    from TGatedSegmentLib.training.preflight import preflight

    def check(pattern, **kw):
        with pytest.raises(InputError, match=pattern):
            preflight(
                TrainConfig(
                    data=data, output=tmp_path / "run", **{"base": "builtin:tiny", "tokenizer": "compact", **kw}
                )
            )
        assert not (tmp_path / "run").exists()

    check("nothing to train", finetune="adapters", temporal=False)
    check("--peft-dim without --peft", peft_dim=8)
    check("unknown parts", peft="dense", peft_parts="vision,eyes")
    check("needs the temporal adapter", probabilistic=True, temporal=False)
    check("--lr-peft without PEFT", lr_peft=1e-3)
    wide = tmp_path / "wide-text.json"
    from helpers.env import TINY_CLIPSEG_CONFIG

    wide.write_text(
        json.dumps({**TINY_CLIPSEG_CONFIG, "text_config": {**TINY_CLIPSEG_CONFIG["text_config"], "hidden_size": 48}})
    )
    check(r"text width \(48\) to equal its projection dim \(32\)", base=str(wide), peft="shallow")
    preflight(
        TrainConfig(
            data=data,
            output=tmp_path / "ok",
            base=str(wide),
            tokenizer="compact",
            peft="shallow",
            peft_parts="vision,conditional",
        )
    )  # without the text adapters it fits
    preflight(
        TrainConfig(
            data=data,
            output=tmp_path / "ok",
            base="builtin:tiny",
            tokenizer="compact",
            finetune="adapters",
            temporal=False,
            peft="dense",
        )
    )


def test_a_base_with_other_peft_adapters_is_rejected(data, cache_dir, clipseg_base, tmp_path):
    run = train(
        cfg(
            data,
            cache_dir,
            tmp_path / "dense",
            base=str(clipseg_base),
            finetune="adapters",
            peft="dense",
            steps=1,
            epochs=1,
        )
    )
    from TGatedSegmentLib.training.preflight import preflight

    with pytest.raises(InputError, match="already has PEFT adapters dense"):
        preflight(TrainConfig(data=data, output=tmp_path / "next", base=str(run / "last"), peft="shallow"))
    # the same adapters (or none asked for) continue training the base's own
    preflight(TrainConfig(data=data, output=tmp_path / "next", base=str(run / "last"), peft="dense"))
    before = load_file(str(run / "last" / "model.safetensors"))
    shutil.copytree(run / "last", tmp_path / "start")
    again = train(
        cfg(
            data,
            cache_dir,
            tmp_path / "next",
            base=str(tmp_path / "start"),
            finetune="adapters",
            steps=1,
            epochs=1,
            image_size=None,
        )
    )
    after = load_file(str(again / "last" / "model.safetensors"))
    assert set(after) == set(before)  # the same adapters, continued (not fresh ones)
    assert meta(again / "last")["base_model_id"] == str(clipseg_base)


def test_cli_rejects_bad_combinations_in_one_line(data, tmp_path):
    from helpers.env import TINY_CLIPSEG_CONFIG, run_cli

    wide = tmp_path / "wide-text.json"
    wide.write_text(
        json.dumps({**TINY_CLIPSEG_CONFIG, "text_config": {**TINY_CLIPSEG_CONFIG["text_config"], "hidden_size": 48}})
    )
    common = ("train", "--data", str(data), "--output", str(tmp_path / "run"), "--tokenizer", "compact")
    cases = [
        (["--base", str(wide), "--peft", "shallow"], r"--peft shallow with text adapters needs the base's text width"),
        (["--base", "builtin:tiny", "--finetune", "adapters", "--no-temporal"], r"nothing to train"),
        (["--base", "builtin:tiny", "--peft-dim", "8"], r"--peft-dim without --peft"),
        (["--base", "builtin:tiny", "--probabilistic", "--no-temporal"], r"--probabilistic needs the temporal"),
        (["--base", "builtin:tiny", "--freeze-encoders", "--finetune", "full"], r"contradicts --finetune full"),
        (["--base", "builtin:tiny", "--peft", "dense", "--peft-parts", "eyes"], r"unknown parts \(eyes\)"),
    ]
    for extra, pattern in cases:
        out = run_cli(*common, *extra, cwd=tmp_path)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("tgated: error: "), (extra, out.stderr)
        assert re.search(pattern, lines[0]), lines[0]
        assert not (tmp_path / "run").exists()
    out = run_cli(*common, "--base", "builtin:tiny", "--finetune", "sideways", cwd=tmp_path)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_cli_options_reach_the_run(data, clipseg_base, tmp_path):
    import subprocess

    from helpers.env import backend_command, python_env

    run = tmp_path / "run"
    out = subprocess.run(
        backend_command(
            "train",
            "--data",
            str(data),
            "--output",
            str(run),
            "--base",
            str(clipseg_base),
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--samples-per-epoch",
            "4",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--progress",
            "none",
            "--finetune",
            "adapters",
            "--peft",
            "dense",
            "--peft-dim",
            "8",
            "--peft-parts",
            "text,vision",
            "--lr-peft",
            "5e-4",
            "--probabilistic",
        ),
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    raw = meta(run / "best")
    settings = raw["training"]["settings"]
    assert (
        settings["finetune"],
        settings["peft"],
        settings["peft_dim"],
        settings["peft_parts"],
        settings["lr_peft"],
        settings["probabilistic"],
    ) == ("adapters", "dense", 8, "vision,text", 5e-4, True)
    assert raw["peft"]["dim"] == 8 and raw["peft"]["conditional"] is False and raw["adapter"]["probabilistic"]
    assert raw["partial_weights"] and raw["training"]["history"][0]["lr"]["peft"] == pytest.approx(5e-4, rel=0.5)
    resumed = subprocess.run(
        backend_command("train", "--resume", str(run), "--epochs", "2", "--progress", "none"),
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [h["epoch"] for h in meta(run / "last")["training"]["history"]] == [1, 2]
