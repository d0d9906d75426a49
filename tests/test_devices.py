"""The local device: ``self.device``, fal's machine options honoured where they can be,
the device on the card, memory handed back on stop and restart, and no torch needed."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import weakref

import pytest

import falkit as fal
from falkit import devices
from falkit.devices import DeviceSpec, describe_device, gpus_wanted, pick_device
from falkit.serving import card_text


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(devices, "_warned", set())


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_machine_types_that_ask_for_a_gpu():
    def app(**options: object) -> type:
        return type("A", (fal.App,), dict(options))

    assert gpus_wanted(app()) == 0  # fal's default machine_type "S" is a CPU machine
    for cpu in ("XS", "S", "M", "L", "XL", ["M", "L"]):
        assert gpus_wanted(app(machine_type=cpu)) == 0, cpu
    for gpu in ("GPU", "GPU-A100", "GPU-H100", ["GPU-A100", "GPU-H100"]):
        assert gpus_wanted(app(machine_type=gpu)) == 1, gpu
    assert gpus_wanted(app(machine_type="GPU-H100", num_gpus=2)) == 2


def test_self_device_is_the_best_visible_device(serve):
    class Where(fal.App):
        def setup(self):
            self.where = self.device

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"device": self.where}

    server = serve(Where)
    expected = "cuda" if _cuda() else pick_device()
    with server.client as client:
        assert client.call("/") == {"device": expected}
    assert server.device.kind == expected
    assert f"device: {expected}" in card_text(server)


@pytest.mark.skipif("torch" in sys.modules and _cuda(), reason="this machine has a GPU")
def test_gpu_asked_where_there_is_none_serves_on_cpu_and_says_so_once(serve, caplog):
    class Big(fal.App):
        machine_type = "GPU-H100"

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"device": self.device}

    with caplog.at_level(logging.WARNING, logger="falkit"):
        server = serve(Big)
        with server.client as client:
            assert client.call("/") == {"device": "cpu"}
            fal.serve(Big, fresh=True)
            assert client.call("/") == {"device": "cpu"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "falkit"]
    assert len(warnings) == 1, warnings
    assert "Big asks for a GPU (machine_type='GPU-H100')" in warnings[0]
    assert "serving on CPU" in warnings[0]
    assert server.device.kind == "cpu"


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )


def test_cuda_visible_devices_is_respected():
    # Hidden GPUs are no GPUs: torch applies CUDA_VISIBLE_DEVICES, and the message says it.
    done = _run_python(
        """
        import falkit as fal
        from falkit.devices import pick_device
        class Gpu(fal.App):
            machine_type = "GPU"
        print(pick_device(Gpu))
        """,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cpu"
    assert "CUDA_VISIBLE_DEVICES=''" in done.stderr and "serving on CPU" in done.stderr


NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed (blocked for this test)")

sys.meta_path.insert(0, NoTorch())

import json
import falkit as fal
from falkit.serving import card_text

class Plain(fal.App):
    def setup(self):
        self.where = self.device

    @fal.endpoint("/")
    def run(self) -> dict:
        return {"device": self.where}

class WantsGpu(fal.App):
    machine_type = "GPU-A100"
    num_gpus = 1

    @fal.endpoint("/")
    def run(self) -> dict:
        return {"device": self.device}

results = {}
for app in (Plain, WantsGpu):
    server = fal.serve(app)
    results[app.__name__] = server.client.call("/")["device"]
    results[app.__name__ + "_card"] = card_text(server)
    server.stop()
results["torch_imported"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print(json.dumps(results))
"""


def test_without_torch_everything_serves_on_cpu_and_nothing_imports_torch():
    done = _run_python(NO_TORCH)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["Plain"] == "cpu" and results["WantsGpu"] == "cpu"
    assert "device: cpu" in results["Plain_card"]
    assert results["torch_imported"] is False
    assert "asks for a GPU" in done.stderr and "torch is not installed" in done.stderr


def test_serving_a_cpu_app_does_not_import_torch_even_when_installed():
    done = _run_python(
        """
        import sys
        import falkit as fal
        from falkit.serving import card_text
        class Plain(fal.App):
            @fal.endpoint("/")
            def run(self) -> dict:
                return {}
        server = fal.serve(Plain)
        server.client.call("/")
        card_text(server)
        server.stop()
        print("torch" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_card_and_device_spec_show_name_and_memory():
    cpu = describe_device("cpu")
    assert cpu.kind == "cpu" and cpu.name
    if cpu.total_memory is not None:
        assert " GiB used)" in cpu.describe()
    gpu = DeviceSpec("cuda", "NVIDIA H100 80GB HBM3", 80 * 1024**3, 3 * 1024**3)
    assert gpu.describe() == "cuda: NVIDIA H100 80GB HBM3 (3.0 / 80.0 GiB used)"
    assert DeviceSpec("cpu", "cpu").describe() == "cpu"


class Holder(fal.App):
    def setup(self):
        self.weights = bytearray(32 * 1024 * 1024)  # stands in for a model

    @fal.endpoint("/")
    def run(self) -> dict:
        return {"size": len(self.weights)}


def _gone(ref: weakref.ref, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.02)
    return ref() is None


def test_instance_is_gone_after_stop(serve):
    server = serve(Holder)
    with server.client as client:
        assert client.call("/") == {"size": 32 * 1024 * 1024}
    ref = weakref.ref(server._instance)
    server.stop()
    assert _gone(ref), "the stopped server's App instance is still referenced"


def test_old_instance_is_gone_after_a_fresh_restart(serve):
    server = serve(Holder)
    with server.client as client:
        client.call("/")
        ref = weakref.ref(server._instance)
        fal.serve(Holder, fresh=True)
        assert client.call("/") == {"size": 32 * 1024 * 1024}
    assert server._instance is not ref()
    assert _gone(ref), "the replaced App instance is still referenced"


@pytest.mark.skipif("torch" not in sys.modules or not _cuda(), reason="needs a CUDA GPU")
def test_gpu_memory_is_handed_back_on_stop_and_restart(serve):
    import torch

    class OnGpu(fal.App):
        machine_type = "GPU"

        def setup(self):
            self.weights = torch.ones(256, 1024, 1024, device=self.device)  # 1 GiB

        @fal.endpoint("/")
        def run(self) -> dict:
            return {"device": str(self.weights.device)}

    before = torch.cuda.memory_reserved()
    server = serve(OnGpu)
    with server.client as client:
        assert client.call("/")["device"].startswith("cuda")
    assert server.device.kind == "cuda" and server.device.total_memory
    fal.serve(OnGpu, fresh=True)
    assert torch.cuda.memory_reserved() - before < 1.5 * 1024**3  # one copy, not two
    server.stop()
    assert torch.cuda.memory_reserved() - before < 64 * 1024**2
