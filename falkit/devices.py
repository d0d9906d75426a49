"""Local device choice through torch, which stays optional: nothing here imports torch
unless it is installed and a device is actually asked for."""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("falkit")
_warned: set[str] = set()


@dataclass(frozen=True)
class DeviceSpec:
    """A device as the card and ``%fal ls`` show it."""

    kind: str
    name: str
    total_memory: int | None = None
    used_memory: int | None = None

    def describe(self) -> str:
        """``cuda: NVIDIA H100 (1.2 / 80.0 GiB)`` or ``cpu``."""
        if self.total_memory is None:
            return self.kind if self.name == self.kind else f"{self.kind}: {self.name}"
        gib = 1024**3
        used = (self.used_memory or 0) / gib
        return f"{self.kind}: {self.name} ({used:.1f} / {self.total_memory / gib:.1f} GiB)"


def torch_available() -> bool:
    """True when torch is importable, without importing it."""
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def _wants_gpu(app_cls: type) -> bool:
    machine = getattr(app_cls, "machine_type", "") or ""
    names = [machine] if isinstance(machine, str) else list(machine)
    gpu_names = any("GPU" in n.upper() or n.upper().startswith(("A", "H", "L", "T")) for n in names)
    return bool(getattr(app_cls, "num_gpus", None)) or gpu_names


def pick_device(app_cls: type | None = None) -> str:
    """``cuda`` when torch sees a GPU (``CUDA_VISIBLE_DEVICES`` respected), then ``mps``,
    else ``cpu``. Asking for a GPU where there is none serves on CPU and says so once."""
    kind = "cpu"
    if torch_available():
        import torch

        if torch.cuda.is_available():
            kind = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            kind = "mps"
    if kind == "cpu" and app_cls is not None and _wants_gpu(app_cls):
        name = getattr(app_cls, "__name__", str(app_cls))
        if name not in _warned:
            _warned.add(name)
            logger.warning(
                "%s asks for a GPU (machine_type=%r) but none is visible here: serving on CPU",
                name,
                getattr(app_cls, "machine_type", None),
            )
    return kind


def describe_device(kind: str) -> DeviceSpec:
    """Name and memory of ``kind`` as torch reports it (no torch import for ``cpu``)."""
    if kind == "cuda" and "torch" in sys.modules:
        torch: Any = sys.modules["torch"]
        index = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        free, _ = torch.cuda.mem_get_info(index)
        return DeviceSpec("cuda", torch.cuda.get_device_name(index), total, total - free)
    return DeviceSpec(kind, kind)
