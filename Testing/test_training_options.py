"""A training option is declared once, on its TrainConfig field; the CLI, the resume rules, the checks and
the Slicer module's options follow from that declaration (TGatedSegmentLib/training/options.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass

import pytest
from helpers.env import REPO

from TGatedSegmentLib.errors import InputError
from TGatedSegmentLib.training import config, preflight
from TGatedSegmentLib.training.config import TrainConfig, structural_differences
from TGatedSegmentLib.training.options import (
    Range,
    Resume,
    by_recipe,
    cli_settings,
    defining_the_run,
    resume_may_change,
    setting,
    settings,
)
from TGatedSegmentLib.training.recipes import RECIPES

MODULE = REPO / "TGatedSegment"
if str(MODULE) not in sys.path:
    sys.path.insert(0, str(MODULE))

import TGatedSegmentGlue as glue  # noqa: E402


def train_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """A parser with the ``train`` command, and the command's own parser (for its help)."""
    from TGatedSegmentLib.cli import train as cli

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    cli.add_parser(subparsers)
    return parser, subparsers.choices["train"]


def build(*argv: str):
    from TGatedSegmentLib.cli import train as cli

    return cli.build_config(train_parser()[0].parse_args(["train", *argv]))


def saved_run(folder, **settings_) -> None:
    """A run folder with the resume state (resume/run.json) of a run started with ``settings_``."""
    started = config.TrainConfig(output=str(folder), **settings_)
    (folder / "resume").mkdir(parents=True)
    (folder / "resume" / "run.json").write_text(json.dumps({"config": started.to_dict(), "counters": {}}))


def sample(entry) -> object:
    """A valid value of the setting's flag, as the Python console would pass it."""
    if entry.switch or entry.name == "resume":
        return True
    if entry.option.choices:
        return entry.option.choices[-1]
    return {int: 32, float: 0.5}.get(entry.option.type, "cpu" if entry.name == "device" else "x")


def test_every_field_declares_its_option_and_the_recipes_fill_exactly_the_recipe_fields():
    entries = settings()
    assert [e.name for e in entries] == [f for f in TrainConfig.__dataclass_fields__]
    filled = {e.name for e in entries if e.option.recipe}
    for name, recipe in RECIPES.items():
        assert set(recipe) == filled, name


def test_the_resume_rules_are_the_ones_runs_were_saved_under():
    assert set(resume_may_change()) == {
        "epochs",
        "steps",
        "max_seconds",
        "device",
        "num_workers",
        "val_batch_size",
        "save_every_steps",
        "save_every_minutes",
        "thresholds",  # chosen at each validation for the weights of that moment: not part of the training
    }
    assert set(defining_the_run()) == {
        "data",
        "val",
        "base",
        "tokenizer",
        "temporal",
        "freeze_encoders",
        "batch_size",
        "samples_per_epoch",
        "lr_encoder",
        "lr_text",
        "lr_decoder",
        "lr_adapter",
        "weight_decay",
        "restart_epochs",
        "min_lr",
        "grad_clip",
        "gate_penalty",
        "negative_ratio",
        "max_rotation",
        "flip_probability",
        "seed",
        "image_size",
        "amp",
        "finetune",
        "peft",
        "peft_dim",
        "peft_parts",
        "lr_peft",
        "probabilistic",
        "recipe",
        "adapter",
        "refine",
        "batching",
        "chunk_slices",
        "schedule",
        "warmup_steps",
        "dice",
        "max_zoom",
        "intensity",
        "boundary_weight",
        "hint_weight",
        "exclusive",
        "organ_intensity",
        "random_contrast",
        "hard_pixels",
        "adapter_input",
        "context_head",
        "context_loss",
        "refine_window",
        "refine_window_mix",
        "prompt_centring",
    }
    assert config.PREDATING == {
        "organ_intensity": 0.0,
        "random_contrast": 0.0,
        "hard_pixels": 0.0,
        "adapter_input": "slices",
        "context_head": "none",
        "context_loss": 0.0,
        "refine_window": 1,
        "refine_window_mix": "linear",
        "prompt_centring": "none",
        "thresholds": "fixed",
    }


def test_the_cli_has_exactly_the_declared_flags_and_its_help_prints():
    sub = train_parser()[1]
    actions = {a.option_strings[0]: a for a in sub._actions}
    assert set(actions) == {e.flag for e in cli_settings()} | {"-h", "--progress"}
    for entry in cli_settings():
        action = actions[entry.flag]
        assert sorted(action.choices or ()) == sorted(entry.option.choices)
        if entry.option.shared:
            continue  # --device and --amp: cli/common.py's, the same on every command
        assert action.help.replace("%%", "%") == entry.help and action.default in (None, False)
        assert action.type is entry.option.type and action.option_strings[1:] == list(entry.option.aliases)
    text = sub.format_help()  # a "%" in a help text used to break --help
    assert "hardest 1 % of pixels" in text and "--max-minutes" in text and "(default: the recipe's)" in text


def test_the_slicer_options_are_every_flag_in_both_spellings_and_the_cli_reads_them_back(tmp_path):
    options = glue.trainOptions()
    flags = {flag for flag, _ in options.values()}
    assert flags == {e.flag for e in cli_settings()} - {"--data", "--output"}
    from TGatedSegmentLib.cli import train as cli

    for entry in cli_settings():
        if entry.name in ("data", "output"):
            continue
        camel, snake = next(k for k, (flag, _) in options.items() if flag == entry.flag), entry.dest
        for key in (camel, snake):
            args = glue.trainArguments(str(tmp_path), str(tmp_path / "r"), **{key: sample(entry)})
            assert entry.flag in args, key
            parsed = train_parser()[0].parse_args(args)
            if entry.name != "resume":
                assert entry.name in cli._explicit(parsed), key
    with pytest.raises(TypeError, match="known: val, base, tokenizer, recipe, noTemporal"):
        glue.trainArguments("/d", "/r", lr=1)
    args = glue.trainArguments("/d", "/r", maxMinutes=1.5, lr_text=0, probabilistic=True, amp="bf16")
    config_ = cli.build_config(train_parser()[0].parse_args(args))
    assert (config_.max_seconds, config_.lr_text, config_.probabilistic, config_.amp) == (90.0, 0.0, True, "bf16")


def test_a_resume_may_change_what_is_declared_so_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    saved_run(run, data=str(tmp_path), recipe="cpu", steps=10)
    resumed = build("--resume", str(run), "--steps", "20", "--max-minutes", "2", "--num-workers", "1")
    assert (resumed.steps, resumed.max_seconds, resumed.num_workers, resumed.resume) == (20, 120.0, 1, True)
    with pytest.raises(InputError, match="cannot change --lr-decoder, --no-temporal when resuming") as refused:
        build("--resume", str(run), "--lr-decoder", "1e-3", "--no-temporal")
    assert (
        "--epochs, --steps, --max-minutes, --thresholds, --device, --num-workers and --save-every-steps may change"
        in refused.value.hint
    )
    assert build("--resume", str(run), "--data", str(tmp_path), "--recipe", "cpu").steps == 10  # the same: fine


def test_the_old_tables_still_import_with_a_deprecation_warning():
    from TGatedSegmentLib.cli import train as cli

    with pytest.warns(DeprecationWarning, match="STRUCTURAL"):
        from TGatedSegmentLib.training.config import STRUCTURAL
    assert set(STRUCTURAL) == set(defining_the_run())
    with pytest.warns(DeprecationWarning, match="RESUME_OVERRIDES"):
        assert set(cli.RESUME_OVERRIDES) == set(resume_may_change())
    with pytest.warns(DeprecationWarning, match="RECIPE_OPTIONS"):
        recipe_options = cli.RECIPE_OPTIONS
    assert ("epochs", int, "epochs") in recipe_options and len(recipe_options) == 39
    with pytest.warns(DeprecationWarning, match="CHOICES"):
        assert cli.CHOICES["dice"] == ["sample", "batch"]
    with pytest.warns(DeprecationWarning, match="PATH_OPTIONS"):
        assert set(cli.PATH_OPTIONS) == {"data", "val", "base", "tokenizer", "cache_dir"}
    for module in (glue, glue.commands):
        with pytest.warns(DeprecationWarning, match="TRAIN_OPTIONS"):
            assert module.TRAIN_OPTIONS["maxMinutes"] == ("--max-minutes", "float")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            config.NO_SUCH_NAME


def test_the_glue_reads_the_options_without_torch():
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(MODULE)!r})
        import TGatedSegmentGlue as glue
        args = glue.trainArguments("/d", "/r", recipe="cpu", maxMinutes=3, lrText=0)
        assert "--lr-text" in args and len(glue.trainOptions()) > 40
        import TGatedSegmentLib.training.config
        print(sorted(m for m in ("torch", "transformers", "SimpleITK") if m in sys.modules))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", cwd=str(REPO), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- a new option


@dataclass
class WithNewOptions(TrainConfig):
    """TrainConfig with three settings more, declared the way every field is."""

    lr_magic: float | None = setting(None, "learning rate of the magic", float, range=Range(float, 0), optional=True)
    magic_rounds: int = setting(3, "rounds of magic per step", int, range=Range(int, 1), resume=Resume.MAY_CHANGE)
    magic_weight: float | None = by_recipe("weight of the magic loss", float, range=Range(float, 0))
    no_magic: bool = setting(False, "switch the magic off")


@pytest.fixture
def new_options(monkeypatch):
    """TrainConfig is WithNewOptions wherever the package looks it up; each recipe has a magic weight."""
    for module in (config, preflight):
        monkeypatch.setattr(module, "TrainConfig", WithNewOptions)
    for name, recipe in RECIPES.items():
        monkeypatch.setitem(recipe, "magic_weight", 0.25 if name == "paper" else 0.5)


def test_a_field_with_its_option_is_all_a_new_option_needs(new_options, tmp_path):
    # the CLI: flags with their help, parsed into the config, checked, the recipe's default
    help_text = train_parser()[1].format_help()
    for text in (
        "--lr-magic LR_MAGIC",
        "learning rate of the magic",
        "--magic-rounds",
        "--no-magic",
        "weight of the magic loss (default: the recipe's)",
    ):
        assert text in " ".join(help_text.split()), text
    common = ("--data", str(tmp_path), "--output", str(tmp_path / "new"))
    made = build(*common, "--lr-magic", "0.1", "--magic-rounds", "5", "--no-magic")
    assert isinstance(made, WithNewOptions)
    assert (made.lr_magic, made.magic_rounds, made.no_magic, made.magic_weight) == (0.1, 5, True, 0.25)
    assert build(*common, "--recipe", "cpu").magic_weight == 0.5
    with pytest.raises(InputError, match=r"lr_magic must be a finite number >= 0, got -1\.0") as refused:
        build(*common, "--lr-magic", "-1")
    assert refused.value.hint == "Pass a valid --lr-magic."
    with pytest.raises(InputError, match="magic_rounds must be an integer >= 1"):
        WithNewOptions(data=str(tmp_path), output=str(tmp_path / "x"), magic_rounds=0)

    # the Slicer module's options, in both spellings
    for options in (
        {"lrMagic": 0.1, "magicRounds": 5, "noMagic": True},
        {"lr_magic": 0.1, "magic_rounds": 5, "no_magic": True},
    ):
        args = glue.trainArguments(str(tmp_path), str(tmp_path / "new"), **options)
        assert args[-5:] == ["--lr-magic", "0.1", "--magic-rounds", "5", "--no-magic"]

    # the resume rules: magic_rounds may change, lr_magic defines the run
    run = tmp_path / "run"
    saved_run(run, data=str(tmp_path), lr_magic=0.1)
    assert build("--resume", str(run), "--magic-rounds", "7").magic_rounds == 7
    with pytest.raises(InputError, match="cannot change --lr-magic when resuming") as refused:
        build("--resume", str(run), "--lr-magic", "0.2")
    assert "--magic-rounds may change" in refused.value.hint
    again = config.TrainConfig(data=str(tmp_path), output=str(run), lr_magic=0.2)
    assert structural_differences({**again.to_dict(), "lr_magic": 0.1}, again) == ["lr_magic: 0.1 -> 0.2"]
