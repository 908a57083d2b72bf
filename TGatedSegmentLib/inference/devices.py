"""Which compute devices PyTorch sees here, and the one rule that turns a device name into a device.

The Slicer module asks the backend process (``tgated devices --progress json``) instead of importing
torch itself: importing torch in Slicer's GUI process would load CUDA there for nothing, and the
answer must describe the Python that will run the model, which is the backend's.
"""

from __future__ import annotations

import platform
import re

import torch

from ..errors import DeviceError

_CUDA = re.compile(r"^cuda(?::(\d+))?$")
DEVICE_HINT = "Use auto, cpu, cuda, cuda:N (N-th GPU) or mps (Apple GPU)."


def available_devices() -> list[dict]:
    """Every device a run could use: the CPU, each CUDA GPU (name, memory) and Apple's MPS."""
    devices = [{"id": "cpu", "kind": "cpu", "name": "CPU"}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "id": f"cuda:{index}",
                    "kind": "cuda",
                    "name": properties.name,
                    "memory_gb": round(properties.total_memory / 2**30, 1),
                }
            )
    if _mps_available():
        devices.append({"id": "mps", "kind": "mps", "name": "Apple GPU (MPS)"})
    return devices


def describe_environment() -> dict:
    """What ``tgated devices`` reports: the devices, and the Python and torch build behind them."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_build": getattr(torch.version, "cuda", None),
        "devices": available_devices(),
    }


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when PyTorch sees one, else the CPU; a device that is not there
    is a :class:`DeviceError` that says so and lists what is there."""
    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    present = ", ".join(d["id"] for d in available_devices())
    cuda = _CUDA.match(name)
    if cuda:
        if not torch.cuda.is_available():
            build = "" if getattr(torch.version, "cuda", None) else " (this PyTorch is a CPU-only build)"
            raise DeviceError(
                f"CUDA was requested but PyTorch sees no CUDA GPU on this machine{build}",
                f"Use --device cpu (or auto), or install a CUDA build of PyTorch. Devices here: {present}.",
            )
        index = int(cuda.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"GPU cuda:{index} was requested but PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)",
                f"Choose one of: {present}.",
            )
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise DeviceError(
                "the Apple GPU (MPS) was requested but PyTorch cannot use it here",
                f"Use --device cpu (or auto). Devices here: {present}.",
            )
        return torch.device("mps")
    raise DeviceError(f"unknown device '{device}'", DEVICE_HINT)
