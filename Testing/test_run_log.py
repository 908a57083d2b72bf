"""RUN/logs/: the step and validation CSV files, the curves, and how a resumed run continues them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers.datasets import make_dataset
from helpers.training import CancelAfterPolls, fast_settings

from TGatedSegmentLib.training import TrainConfig, resume_config, train
from TGatedSegmentLib.training.run_log import RunLog

FAST = fast_settings()


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("runlog") / "ds", cases=1, depth=10, size=24)


def test_a_training_writes_step_and_validation_logs_and_curves(data, tmp_path):
    run = train(TrainConfig(data=data, output=tmp_path / "run", **FAST))
    steps = rows(run / "logs" / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 7))  # 12 samples / 4 = 3 steps x 2 epochs
    assert all(float(r["loss"]) > 0 and float(r["lr_decoder"]) > 0 for r in steps)
    assert {int(r["epoch"]) for r in steps} == {1, 2}
    val = rows(run / "logs" / "validation.csv")
    assert [int(r["step"]) for r in val] == [3, 6]
    organs = [name[5:] for name in val[0] if name.startswith("dice_")]
    assert organs == ["liver", "spleen", "left_kidney"]  # the phantom dataset's organs, every one scored
    assert all(r[f"dice_{o}"] != "" for r in val for o in organs)
    for r in val:  # the adapter's gate over the validation volumes
        gate = [float(r[f"gate_{c}"]) for c in ("p10", "p50", "p90")]
        assert 0 < gate[0] <= gate[1] <= gate[2] < 1 and gate[0] - 1e-3 <= float(r["gate_mean"]) <= gate[2] + 1e-3
    assert (run / "logs" / "curves.png").stat().st_size > 1000
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 7))
    assert [e.step for e in events.Scalars("val/mean_dice")] == [3, 6]
    assert [e.step for e in events.Scalars("gate/mean")] == [3, 6]
    assert [e.value for e in events.Scalars("gate/p50")] == pytest.approx([float(r["gate_p50"]) for r in val])


def test_a_resumed_run_continues_the_logs_without_repeating_steps(data, tmp_path):
    from TGatedSegmentLib.errors import Cancelled

    # polls: 1 while caching, 1 before each step, 1 after each epoch: the 7th is before step 5
    with pytest.raises(Cancelled):
        train(TrainConfig(data=data, output=tmp_path / "run", **FAST), cancel=CancelAfterPolls(1 + 3 + 1 + 1))
    assert [int(r["step"]) for r in rows(tmp_path / "run" / "logs" / "steps.csv")] == [1, 2, 3, 4]
    train(resume_config(tmp_path / "run"))
    steps = rows(tmp_path / "run" / "logs" / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 7))
    assert [int(r["step"]) for r in rows(tmp_path / "run" / "logs" / "validation.csv")] == [3, 6]


def test_rows_past_the_resumed_step_are_dropped(tmp_path):
    log = RunLog(tmp_path, ["decoder"], ["liver"], resume_step=None)
    for step in range(1, 6):
        log.step(step, 1, 0.5, {"decoder": 1e-3})
    log.close()
    RunLog(tmp_path, ["decoder"], ["liver"], resume_step=3).close()  # the run resumes from its step-3 save point
    assert [int(r["step"]) for r in rows(tmp_path / "logs" / "steps.csv")] == [1, 2, 3]


def test_a_log_from_before_the_gate_columns_keeps_its_rows(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "validation.csv").write_text(
        "step,epoch,train_loss,val_mean_dice,dice_liver\n3,1,0.5,0.4,0.4\n6,2,0.4,0.6,0.6\n"
    )
    log = RunLog(tmp_path, ["decoder"], ["liver"], resume_step=3)
    log.validation(
        {
            "step": 6,
            "epoch": 2,
            "train_loss": 0.3,
            "val_mean_dice": 0.7,
            "val_dice": {"liver": 0.7},
            "gate": {"mean": 0.4, "p10": 0.1, "p50": 0.4, "p90": 0.8},
        }
    )
    log.close()
    val = rows(tmp_path / "logs" / "validation.csv")
    assert [(r["step"], r["dice_liver"], r["gate_mean"]) for r in val] == [("3", "0.4", ""), ("6", "0.7", "0.4")]


def test_the_gate_recorder_summarises_what_the_adapter_computes(tiny_checkpoint, tiny_baseline_checkpoint):
    import numpy as np
    import torch

    from TGatedSegmentLib.evaluation.gate import GateRecorder
    from TGatedSegmentLib.model.checkpoint import load_model

    model = load_model(tiny_checkpoint).model
    with torch.no_grad():  # a gate that varies: random gate weights instead of the zero initialisation
        model.adapter.gate_proj.weight.normal_(0, 0.5)
    window = torch.randn(2, 5, model.num_activations, 485, 32)
    with GateRecorder(model) as recorder, torch.no_grad():
        gate = model.fuse_with_gate(window).gate
    model.fuse(window)  # outside: not recorded
    summary = GateRecorder.summarize([recorder.state()])
    values = gate.flatten().numpy()
    assert recorder.count == values.size
    assert summary["mean"] == pytest.approx(float(values.mean()), abs=1e-6)
    for p in (10, 50, 90):
        assert abs(summary[f"p{p}"] - float(np.percentile(values, p))) <= 2.0 / GateRecorder.BINS
    assert GateRecorder.summarize([recorder.state(), recorder.state()])["p50"] == summary["p50"]  # ranks combined
    with GateRecorder(load_model(tiny_baseline_checkpoint).model) as baseline:
        pass
    assert GateRecorder.summarize([baseline.state()]) == {}


def test_other_ranks_write_nothing(tmp_path):
    log = RunLog(tmp_path, ["decoder"], ["liver"], resume_step=None, enabled=False)
    log.step(1, 1, 0.5, {"decoder": 1e-3})
    log.validation({"step": 1, "epoch": 1, "train_loss": 0.5, "val_mean_dice": 0.1, "val_dice": {"liver": 0.1}})
    log.close()
    assert not (tmp_path / "logs").exists()
