"""Shared fixtures: tiny random-weight models, an offline tokenizer, and the optional ../shared data.

Tests never touch the network (HF_HUB_OFFLINE is forced) and never need ../shared to run: what
needs real data skips cleanly when it is absent. They never see the user's model folder either:
``TGATED_HOME`` points at a fresh temporary folder for the session (subprocesses inherit it).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers.env import SHARED, TINY_CLIPSEG_CONFIG

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["TGATED_HOME"] = tempfile.mkdtemp(prefix="tgated-home-")
atexit.register(shutil.rmtree, os.environ["TGATED_HOME"], True)


def pytest_configure(config):
    """Under pytest-xdist (``-n``), share the cores out: each worker, and each backend process its
    tests start, gets cores / workers threads; two workers of two threads each on two cores would
    spin against each other at every OpenMP barrier."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from TGatedSegmentLib.inference.precision import use_all_cores

        threads = max(1, use_all_cores() // workers)  # the backend's count of the cores this process may use
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir) -> Path:
    data = shared_dir / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present")
    return data


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("configs") / "clipseg-tiny.config.json"
    path.write_text(json.dumps(TINY_CLIPSEG_CONFIG))
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_config_file) -> Path:
    """An untrained T-Gated checkpoint on the tiny CLIPSeg, with the compact offline tokenizer."""
    from TGatedSegmentLib.model.checkpoint import init_checkpoint

    return init_checkpoint(
        tiny_config_file, tmp_path_factory.mktemp("ckpt") / "tiny-tgated", tokenizer="compact", seed=0
    )


@pytest.fixture(scope="session")
def tiny_reference_checkpoint(tmp_path_factory, tiny_config_file) -> Path:
    """The same, wired as the authors' adapter (``AdapterConfig.mode == "reference"``)."""
    from TGatedSegmentLib.model.checkpoint import init_checkpoint
    from TGatedSegmentLib.model.configuration import AdapterConfig

    return init_checkpoint(
        tiny_config_file,
        tmp_path_factory.mktemp("ckpt") / "tiny-reference",
        tokenizer="compact",
        adapter=AdapterConfig.default_for(32, mode="reference"),
        seed=0,
    )


@pytest.fixture(scope="session")
def tiny_baseline_checkpoint(tmp_path_factory, tiny_config_file) -> Path:
    from TGatedSegmentLib.model.checkpoint import init_checkpoint

    return init_checkpoint(
        tiny_config_file, tmp_path_factory.mktemp("ckpt") / "tiny-baseline", tokenizer="compact", temporal=False, seed=0
    )


@pytest.fixture(scope="session")
def tiny_phantom_run(tmp_path_factory):
    """A tiny model trained 400 steps on one synthetic volume (test_training_learns asserts it learnt;
    test_precision checks that int8 keeps what it learnt): trained once for the session."""
    from helpers.training import train_tiny_on_phantom

    return train_tiny_on_phantom(tmp_path_factory.mktemp("phantom-run"), epochs=4)
