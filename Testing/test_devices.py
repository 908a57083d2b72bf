"""Device choice: what ``tgated devices`` reports, and a clear error for a device that is not there."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from helpers.env import backend_command, python_env

from TGatedSegmentLib.errors import DeviceError, InputError
from TGatedSegmentLib.inference import devices


def test_the_cpu_is_always_listed_first():
    found = devices.available_devices()
    assert found[0] == {"id": "cpu", "kind": "cpu", "name": "CPU"}
    assert all(d["id"] == "cpu" or d["id"].startswith(("cuda:", "mps")) for d in found)


def test_cuda_asked_for_without_cuda_is_a_clear_device_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "CUDA:0", "cuda:3"):
        with pytest.raises(DeviceError, match="CUDA was requested but PyTorch sees no CUDA GPU") as info:
            devices.resolve_device(name)
        assert "--device cpu" in info.value.hint and "Devices here: cpu" in info.value.hint
    assert isinstance(info.value, InputError)  # the CLI reports it as a user error (exit code 2)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_a_gpu_index_beyond_the_gpus_names_the_ones_there(monkeypatch):
    class Properties:
        name, total_memory = "Test GPU", 8 * 2**30

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Properties)
    assert devices.available_devices()[1] == {"id": "cuda:0", "kind": "cuda", "name": "Test GPU", "memory_gb": 8.0}
    assert devices.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match="cuda:1 was requested but PyTorch sees 1 CUDA GPU") as info:
        devices.resolve_device("cuda:1")
    assert "cpu, cuda:0" in info.value.hint


def test_mps_and_unknown_devices(monkeypatch):
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(DeviceError, match="Apple GPU"):
        devices.resolve_device("mps")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        devices.resolve_device("tpu")


def test_the_devices_command_reports_json_for_slicer():
    result = subprocess.run(
        backend_command("devices", "--progress", "json"),
        capture_output=True,
        encoding="utf-8",
        env=python_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["event"] == "done" and report["torch"] == torch.__version__
    assert report["devices"][0]["id"] == "cpu" and report["python"].count(".") == 2
