"""The device list of the panel, from what the backend process reported (``tgated devices``).

Detection runs in the backend process because that is the Python that will use the device, and
because importing torch in Slicer's GUI process would load CUDA there for nothing. With a report at
hand, a device that is not there is refused before a run starts, in the panel's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .i18n import tr as _
from .options import checkedDevice


@dataclass(frozen=True)
class DeviceReport:
    """The devices (dicts with id, kind, name and for a GPU memory_gb) and the versions behind them."""

    devices: list[dict] = field(default_factory=list)
    python: str = ""
    torch: str = ""
    cudaBuild: str | None = None

    @classmethod
    def fromEvent(cls, event: dict) -> "DeviceReport":
        devices = [d for d in event.get("devices") or [] if isinstance(d, dict) and d.get("id")]
        return cls(devices, str(event.get("python") or ""), str(event.get("torch") or ""), event.get("cuda_build"))

    @property
    def ids(self) -> list[str]:
        return [d["id"] for d in self.devices]

    def choices(self) -> list[tuple[str, str]]:
        """(label, device id) for the panel's list: Auto first, then every detected device."""
        gpu = next((d for d in self.devices if d.get("kind") == "cuda"), None)
        auto = _("Auto (GPU {name})").format(name=gpu["name"]) if gpu else _("Auto (CPU: no CUDA GPU found)")
        choices = [(auto, "auto")]
        for device in self.devices:
            if device.get("kind") == "cpu":
                label = _("CPU")
            elif device.get("kind") == "cuda":
                label = _("GPU {id}: {name} ({memory} GB)").format(
                    id=device["id"], name=device.get("name", ""), memory=device.get("memory_gb", "?")
                )
            else:
                label = _("{name} ({id})").format(name=device.get("name", device["id"]), id=device["id"])
            choices.append((label, device["id"]))
        return choices

    def problem(self, device: str) -> str | None:
        """Why ``device`` cannot be used here (problem and fix), or None when it can."""
        name = checkedDevice(device)
        if name in ("auto", "cpu") or name in self.ids or (name == "cuda" and "cuda:0" in self.ids):
            return None
        present = ", ".join(self.ids) or "cpu"
        if name.startswith("cuda") and not any(i.startswith("cuda") for i in self.ids):
            build = (
                _(" This PyTorch ({version}) is a CPU-only build.").format(version=self.torch)
                if self.torch and not self.cudaBuild
                else ""
            )
            return _(
                "CUDA was asked for, but PyTorch sees no CUDA GPU here.{build} Choose CPU or Auto under Advanced > "
                "Device (devices here: {present}), or install a CUDA build of PyTorch with the PyTorch Utils "
                "module."
            ).format(build=build, present=present)
        return _("The device '{device}' is not available here. Choose one of: {present}.").format(
            device=name, present=present
        )
