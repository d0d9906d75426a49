"""falkit.ray: the same App class as a Ray Serve application, on a small local Ray instance
started by the test (2 CPUs, no dashboard) and shut down afterwards. Slow on a 2-core
machine, hence the generous timeouts; it runs in CI, it is not skipped."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="install with `pip install 'falkit[ray]'`")

import falkit  # noqa: E402
from falkit.cli import load_app  # noqa: E402
from falkit.ray import RayDeployment, deploy, resources_for, scaling_for  # noqa: E402

pytestmark = [
    pytest.mark.timeout(600),
    # Ray Serve's own pydantic models use deprecated Field arguments; not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),
]

APP_SOURCE = """
import os
import fal
from fastapi import WebSocket
from pydantic import BaseModel


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    output: str
    pid: int
    setups: int


class PidApp(fal.App):
    machine_type = "XS"  # half a CPU per replica: two replicas fit a 2-CPU Ray instance

    def setup(self):
        self.setups = getattr(self, "setups", 0) + 1

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=input.prompt, pid=os.getpid(), setups=self.setups)

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"pid": os.getpid()})
        await websocket.close()

    @fal.realtime("/realtime")
    def rt(self, input: Input) -> Output:
        return Output(output=input.prompt.upper(), pid=os.getpid(), setups=self.setups)
"""


PRESTART_OFF = {"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"}


def ray_startup_env(folder: Path) -> dict[str, str]:
    """Environment for a Ray node that starts on a small, busy machine. Ray aborts a node
    whose agent process is not up within ~15 s, and every Ray process imports jsonschema,
    which imports rfc3987-syntax when installed (jupyter brings it) and compiles a grammar:
    2.4 s of CPU of a 3.7 s `import ray`, measured here. The shadow module makes that
    optional import fail in Ray's processes (jsonschema then skips one format check).
    No idle workers are started ahead of time either: they race the agent for the CPU."""
    (folder / "rfc3987_syntax.py").write_text(
        'raise ImportError("left out of Ray processes: see tests/test_ray.py")\n'
    )
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {**PRESTART_OFF, "PYTHONPATH": path}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_ray(attempts: int = 3) -> None:
    # A node whose agent misses Ray's startup window is torn down by Ray; on a loaded
    # 2-core machine that happens, and a second start finds warm file caches.
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayDeployment]:
    path = tmp_path_factory.mktemp("rayapp") / "pid_app.py"
    path.write_text(textwrap.dedent(APP_SOURCE))
    saved = {key: os.environ.get(key) for key in (*PRESTART_OFF, "PYTHONPATH")}
    os.environ.update(ray_startup_env(tmp_path_factory.mktemp("ray_pythonpath")))
    try:
        _start_ray()
        app_cls = load_app(f"{path}::PidApp")
        yield deploy(app_cls, port=_free_port(), num_replicas=2)
    finally:
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_mapping_from_fal_options() -> None:
    class Scaled(falkit.App, min_concurrency=2, max_concurrency=5, keep_alive=30):
        machine_type = "GPU-H100"

    assert scaling_for(Scaled) == {
        "min_replicas": 2,
        "initial_replicas": 2,
        "max_replicas": 5,
        "downscale_delay_s": 30.0,
    }
    assert resources_for(Scaled) == {"num_cpus": 1.0, "num_gpus": 1}

    class Small(falkit.App):
        machine_type = "M"

    assert scaling_for(Small)["min_replicas"] == 1
    assert resources_for(Small) == {"num_cpus": 2.0, "num_gpus": 0}


def test_http_spreads_across_two_replicas_each_set_up_once(deployment: RayDeployment) -> None:
    pids = set()
    with deployment.client as client:
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline:
            body = client.call("/", {"prompt": "hi"})
            assert body["output"] == "hi"
            assert body["setups"] == 1  # setup ran once in this replica, not per request
            pids.add(body["pid"])
        assert len(pids) == 2, f"requests reached only {pids}"
        # fal's URL layout and fal's error bodies survive Ray's proxy.
        assert client.call("/someone/pid-app/", {"prompt": "x"})["output"] == "x"
        with pytest.raises(falkit.RemoteError) as err:
            client.call("/", {"nope": 1})
        assert err.value.status == 422
        assert client.call("/", {"prompt": "after"})["output"] == "after"


def test_websocket_and_realtime_through_ray(deployment: RayDeployment) -> None:
    with deployment.client as client:
        with client.websocket("/ws") as ws:
            assert isinstance(json.loads(ws.recv(timeout=60))["pid"], int)
        with client.realtime("/realtime") as session:
            for word in ("a", "b", "c"):
                session.send({"prompt": word})
                assert session.recv()["output"] == word.upper()


def test_deploy_ray_cli_joins_the_running_cluster(
    deployment: RayDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_cli import tracked_processes

    path = tmp_path / "cli_app.py"
    path.write_text(textwrap.dedent(APP_SOURCE).replace("PidApp", "CliPidApp"))
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    port = deployment.url.rsplit(":", 1)[1]
    cli = tracked_processes()
    process_class = next(cli)
    try:
        proc = process_class(
            "deploy-ray",
            f"{path}::CliPidApp",
            "--port",
            port,
            "--replicas",
            "1",
            "--route-prefix",
            "/cli",
        )
        proc.wait_for("Press Ctrl-C", timeout=300)
        assert f"cli-pid-app on Ray Serve at http://127.0.0.1:{port}/cli" in proc.output
        with falkit.Client(f"{deployment.url}/cli") as client:
            assert client.call("/", {"prompt": "via cli"})["output"] == "via cli"
        assert proc.stop(timeout=120) == 0
        with falkit.Client(deployment.url) as client:  # its app is gone, the other stays
            assert client.call("/", {"prompt": "still"})["output"] == "still"
            with pytest.raises(falkit.RemoteError):
                client.call("/cli/", {"prompt": "gone"})
    finally:
        next(cli, None)
