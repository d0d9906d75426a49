"""Local device choice through torch, which stays optional: nothing here imports torch
unless it is installed and a device is actually asked for (``App.device`` read, or an App
that asks for a GPU served).

fal's ``machine_type`` names GPUs ``GPU-A100``, ``GPU-H100``, ... (and plain ``GPU``);
``XS``/``S``/``M``/``L``/``XL`` are CPU machines. ``num_gpus`` asks for several GPUs. Locally
the App gets what is visible (``CUDA_VISIBLE_DEVICES`` respected, torch applies it): asking
for a GPU where there is none, or for more GPUs than are visible, serves anyway and says so
once per App, on the falkit logger (stderr, so in the cell that serves it)."""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("falkit")
_warned: set[str] = set()
GIB = 1024**3


@dataclass(frozen=True)
class DeviceSpec:
    """A device as the card and ``%fal ls`` show it: kind (``cuda``/``mps``/``cpu``), name,
    total and used memory in bytes (``None`` where unknown)."""

    kind: str
    name: str
    total_memory: int | None = None
    used_memory: int | None = None

    def describe(self) -> str:
        """``cuda: NVIDIA H100 (1.2 / 80.0 GiB used)`` or ``cpu: x86_64``."""
        label = self.kind if self.name in ("", self.kind) else f"{self.kind}: {self.name}"
        if self.total_memory is None:
            return label
        used = (self.used_memory or 0) / GIB
        return f"{label} ({used:.1f} / {self.total_memory / GIB:.1f} GiB used)"


def torch_available() -> bool:
    """True when torch is importable, without importing it."""
    if "torch" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses it, a broken install
        return False


def _machine_types(app_cls: type) -> list[str]:
    machine = getattr(app_cls, "machine_type", "") or ""
    return [machine] if isinstance(machine, str) else [str(m) for m in machine]


def gpus_wanted(app_cls: type) -> int:
    """How many GPUs ``app_cls`` asks for through fal's options (0: a CPU machine)."""
    num = getattr(app_cls, "num_gpus", None)
    if isinstance(num, int) and num > 0:
        return num
    return 1 if any(m.upper().startswith("GPU") for m in _machine_types(app_cls)) else 0


def _visible_kind() -> tuple[str, int]:
    """The best device torch sees and how many of it (imports torch)."""
    if not torch_available():
        return "cpu", 0
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.device_count()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps", 1
    return "cpu", 0


def pick_device(app_cls: type | None = None) -> str:
    """``cuda`` when torch sees a GPU (``CUDA_VISIBLE_DEVICES`` respected), then ``mps``,
    else ``cpu``. Asking for a GPU where there is none serves on CPU and says so once."""
    kind, count = _visible_kind()
    wanted = gpus_wanted(app_cls) if app_cls is not None else 0
    if app_cls is not None and wanted and (kind == "cpu" or count < wanted):
        _warn_once(app_cls, wanted, kind, count)
    return kind


def _warn_once(app_cls: type, wanted: int, kind: str, count: int) -> None:
    name = getattr(app_cls, "__name__", str(app_cls))
    if name in _warned:
        return
    _warned.add(name)
    asked = f"machine_type={getattr(app_cls, 'machine_type', None)!r}"
    if getattr(app_cls, "num_gpus", None):
        asked += f", num_gpus={app_cls.num_gpus}"  # type: ignore[attr-defined]
    if kind == "cpu":
        why = "torch is not installed" if not torch_available() else "torch sees no GPU"
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            why += f" (CUDA_VISIBLE_DEVICES={env!r})"
        logger.warning("falkit: %s asks for a GPU (%s) but %s: serving on CPU", name, asked, why)
    else:
        logger.warning(
            "falkit: %s asks for %d GPUs (%s) but %d %s visible: serving on what is here",
            name, wanted, asked, count, "is" if count == 1 else "are",
        )  # fmt: skip


def describe_device(kind: str) -> DeviceSpec:
    """Name and memory of ``kind``: the GPU's as torch reports them (device-wide used
    memory, as ``nvidia-smi`` shows it), or the machine's RAM for ``cpu``. Never imports
    torch: a GPU kind implies it is imported already."""
    torch: Any = sys.modules.get("torch")
    if kind == "cuda" and torch is not None:
        index = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        free, _ = torch.cuda.mem_get_info(index)
        return DeviceSpec("cuda", torch.cuda.get_device_name(index), total, total - free)
    if kind == "mps" and torch is not None:
        total = getattr(torch.mps, "recommended_max_memory", lambda: None)()
        return DeviceSpec("mps", "Apple GPU", total, torch.mps.driver_allocated_memory())
    return _cpu_spec()


def _cpu_spec() -> DeviceSpec:
    name = platform.processor() or platform.machine() or "cpu"
    total, available = _ram()
    used = total - available if total is not None and available is not None else None
    return DeviceSpec("cpu", name, total, used)


def _ram() -> tuple[int | None, int | None]:
    try:
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return fields.get("MemTotal"), fields.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), None
    except (ValueError, OSError, AttributeError):
        return None, None


def free_memory() -> None:
    """Collect dropped objects and hand cached accelerator memory back to the driver;
    called after a server drops an App instance (stop, restart). No torch import."""
    gc.collect()
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()
