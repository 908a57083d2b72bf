"""DistributedDataParallel through the real launcher: torchrun, 2 CPU processes, gloo."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers.datasets import make_dataset
from helpers.env import python_env
from helpers.training import TINY_CLI_ARGS

from TGatedSegmentLib.model.checkpoint import load_model


def test_torchrun_two_cpu_processes_train_an_epoch_and_write_one_checkpoint(tmp_path):
    data = make_dataset(tmp_path / "ds", cases=2, depth=8, size=24)
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "TGatedSegmentLib",
        "train",
        "--data",
        str(data),
        "--output",
        str(run),
        *TINY_CLI_ARGS,
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--samples-per-epoch",
        "16",
        "--device",
        "cpu",
        "--progress",
        "json",
    ]
    env = {**python_env(), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    assert sorted(p.name for p in run.iterdir()) == ["best", "cache", "last", "logs", "resume"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no leftover temporary folders
    meta = json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))["training"]
    assert meta["sampling"]["world_size"] == 2
    # 16 samples split over 2 ranks in batches of 2: 4 steps per rank and epoch
    assert meta["sampling"]["steps_per_epoch"] == 4 and meta["step"] == 4
    assert [h["epoch"] for h in meta["history"]] == [1]
    assert meta["history"][0]["val_cases"] == 2  # each rank scored one case; rank 0 saw both
    assert set(meta["history"][0]["val_dice"]) == {"liver", "spleen", "left_kidney"}
    assert load_model(run / "best").model.temporal

    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert sum(e.get("kind") == "epoch" for e in events) == 1  # rank 0 alone reports
    assert sum(e.get("event") == "done" for e in events) == 1
    assert out.stderr.count("distributed training: 2 processes, backend gloo") == 1
    assert out.stderr.count("no --val given") == 1
