"""Resume, budgets and kills: an interrupted run continues to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.datasets import make_dataset
from helpers.env import backend_command, python_env
from helpers.training import TINY_CLI_ARGS, CancelAfterPolls, assert_same_weights, fast_settings, weights

from TGatedSegmentLib.errors import Cancelled
from TGatedSegmentLib.model.checkpoint import init_checkpoint, load_model
from TGatedSegmentLib.model.configuration import PreprocessConfig
from TGatedSegmentLib.progress import CancelToken
from TGatedSegmentLib.training import TrainConfig, resume_config, train

FAST = fast_settings(epochs=3, samples_per_epoch=20)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("resume") / "ds", cases=1, depth=10, size=24)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def config(data, cache_dir, output, **kw) -> TrainConfig:
    return TrainConfig(data=data, output=output, **{**FAST, "cache_dir": cache_dir, **kw})


def training_meta(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))["training"]


@pytest.fixture(scope="module")
def uninterrupted(data, cache_dir, tmp_path_factory) -> Path:
    return train(config(data, cache_dir, tmp_path_factory.mktemp("full") / "run"))


def test_uninterrupted_run_layout_and_metadata(uninterrupted):
    meta = training_meta(uninterrupted / "last")
    assert meta["step"] == 15 and meta["epochs_completed"] == 3
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]
    assert all(set(h["val_dice"]) == {"liver", "spleen", "left_kidney"} for h in meta["history"])
    best = max(meta["history"], key=lambda h: h["val_mean_dice"])
    assert meta["best"]["epoch"] == best["epoch"]
    assert training_meta(uninterrupted / "best")["selected"] == "best"
    assert meta["settings"]["lr_adapter"] == 1e-3 and meta["data"]["train_cases"] == ["case0"]
    assert meta["sampling"]["steps_per_epoch"] == 5
    for name in ("best", "last", "resume"):
        loaded = load_model(uninterrupted / name)
        assert loaded.config.preprocessing.image_size == 32 and loaded.model.temporal
        assert [o.name for o in loaded.config.vocabulary] == ["liver", "spleen", "left_kidney"]
    assert (uninterrupted / "resume" / "state.pt").is_file() and not (uninterrupted / "best" / "state.pt").exists()


@pytest.mark.parametrize("where", ["mid-epoch", "epoch boundary"])
def test_cancelled_and_resumed_run_ends_with_the_same_weights(where, data, cache_dir, tmp_path, uninterrupted):
    run = tmp_path / "run"
    if where == "mid-epoch":
        # polls: 1 while caching, 1 before each step, 1 after each epoch: the 10th is before step 8
        token, callback = CancelAfterPolls(1 + 5 + 1 + 2), None
    else:
        token = CancelToken()

        def callback(event):  # stop right after epoch 1 was validated and saved
            if event.get("kind") == "epoch" and event["epoch"] == 1:
                token.cancel()

    with pytest.raises(Cancelled):
        train(config(data, cache_dir, run), progress=callback, cancel=token)
    stopped = training_meta(run / "last")
    assert stopped["step"] == (7 if where == "mid-epoch" else 5)
    assert load_model(run / "best").model is not None and load_model(run / "last").model is not None

    train(resume_config(run))
    assert_same_weights(run / "last", uninterrupted / "last")
    assert_same_weights(run / "best", uninterrupted / "best")
    history = training_meta(run / "last")["history"]
    reference = training_meta(uninterrupted / "last")["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]  # no epoch lost or repeated
    assert [h["val_mean_dice"] for h in history] == [h["val_mean_dice"] for h in reference]
    assert [h["train_loss"] for h in history] == pytest.approx([h["train_loss"] for h in reference], rel=1e-9)


def test_step_budget_stops_mid_epoch_and_a_longer_budget_continues(data, cache_dir, tmp_path, uninterrupted):
    run = train(config(data, cache_dir, tmp_path / "run", steps=7))
    meta = training_meta(run / "last")
    assert meta["step"] == 7 and meta["history"][-1] == {**meta["history"][-1], "epoch": 2, "partial": True}
    assert (run / "best").is_dir()
    train(resume_config(run, steps=100))
    assert_same_weights(run / "last", uninterrupted / "last")  # the partial validation changed nothing
    assert [h["epoch"] for h in training_meta(run / "last")["history"]] == [1, 2, 2, 3]
    again = train(resume_config(run))  # nothing left to do: returns at once, changes nothing
    assert training_meta(again / "last")["step"] == 15


def test_freeze_encoders_and_baseline(data, cache_dir, tmp_path):
    base = init_checkpoint(
        "builtin:tiny", tmp_path / "init", tokenizer="compact", seed=3, preprocessing=PreprocessConfig(image_size=32)
    )
    start = weights(base)
    frozen = train(
        config(
            data,
            cache_dir,
            tmp_path / "frozen",
            base=str(base),
            tokenizer=None,
            image_size=None,
            freeze_encoders=True,
            steps=3,
            epochs=1,
        )
    )
    # --freeze-encoders is --finetune decoder: last/ stores the decoder and adapter only, on top of the base
    assert not any(k.startswith("base_model.clip.") for k in weights(frozen / "last"))
    after = load_model(frozen / "last").model.state_dict()
    encoders = [k for k in start if k.startswith(("base_model.clip.vision_model.", "base_model.clip.text_model."))]
    assert encoders and all(torch.equal(start[k], after[k]) for k in encoders)
    assert not torch.equal(start["base_model.decoder.film_mul.weight"], after["base_model.decoder.film_mul.weight"])
    assert not torch.equal(start["adapter.temporal_pos_emb"], after["adapter.temporal_pos_emb"])

    baseline = train(
        config(
            data,
            cache_dir,
            tmp_path / "baseline",
            base=str(base),
            tokenizer=None,
            image_size=None,
            temporal=False,
            steps=3,
            epochs=1,
        )
    )
    loaded = load_model(baseline / "best")
    assert loaded.model.adapter is None and training_meta(baseline / "best")["temporal"] is False
    after = weights(baseline / "last")
    assert not any(k.startswith("adapter.") for k in after)
    assert any(not torch.equal(start[k], after[k]) for k in encoders if k.startswith("base_model.clip.vision"))
    assert any(not torch.equal(start[k], after[k]) for k in encoders if k.startswith("base_model.clip.text"))


def _start_cli(args, cwd):
    return subprocess.Popen(
        backend_command("train", *args, "--progress", "json"),
        cwd=cwd,
        env=python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
    )


def _wait_for_epoch(proc, epoch: int) -> list[dict]:
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))  # every stdout line is one JSON event
        if events[-1].get("kind") == "epoch" and events[-1]["epoch"] >= epoch:
            return events
    raise AssertionError(f"the run ended before epoch {epoch}: {proc.stderr.read()[-2000:]}")


def test_killed_and_terminated_runs_leave_loadable_checkpoints_and_resume(data, tmp_path):
    run = tmp_path / "run"
    args = [
        "--data",
        str(data),
        "--output",
        str(run),
        *TINY_CLI_ARGS,
        "--batch-size",
        "4",
        "--samples-per-epoch",
        "20",
        "--epochs",
        "40",
        "--device",
        "cpu",
        "--lr-decoder",
        "1e-3",
    ]
    proc = _start_cli(args, tmp_path)
    _wait_for_epoch(proc, 1)
    time.sleep(0.3)  # somewhere in epoch 2, possibly in the middle of a checkpoint write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close(), proc.stderr.close()
    for name in ("best", "last", "resume"):
        assert load_model(run / name).model is not None

    proc = _start_cli(["--resume", str(run), "--epochs", "40"], tmp_path)
    _wait_for_epoch(proc, 3)
    proc.send_signal(signal.SIGTERM)  # Slicer's cancel: stop after the current step and save it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert json.loads(out.strip().splitlines()[-1])["event"] == "cancelled"
    assert "tgated train --resume" in err
    stopped = training_meta(run / "last")
    state = json.loads((run / "resume" / "run.json").read_text(encoding="utf-8"))["counters"]
    assert stopped["step"] == state["global_step"] >= 15

    finish = subprocess.run(
        backend_command("train", "--resume", str(run), "--epochs", "5", "--progress", "none"),
        cwd=tmp_path,
        env=python_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )
    assert finish.returncode == 0, finish.stderr
    meta = training_meta(run / "last")
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4, 5] and meta["step"] == 25


def test_overwrite_replaces_an_earlier_run_but_keeps_its_cache(data, cache_dir, tmp_path):
    run = train(config(data, None, tmp_path / "run", steps=2, epochs=1))
    entries = sorted(p.name for p in (run / "cache").iterdir())
    (run / "best" / "marker").write_text("old")
    train(config(data, None, run, steps=3, epochs=1, overwrite=True, seed=1))
    assert not (run / "best" / "marker").exists()
    meta = training_meta(run / "last")
    assert meta["step"] == 3 and meta["settings"]["seed"] == 1 and len(meta["history"]) == 1
    assert sorted(p.name for p in (run / "cache").iterdir()) == entries
