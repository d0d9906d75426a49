"""``download_file`` / ``download_model_weights`` / ``clone_repository`` and fal's
directories, locally: sources on this machine only (paths, ``file://``, ``data:``, a real
HTTP server on loopback), into the cache directory (``$FALKIT_CACHE_DIR``), bounded,
atomic, re-used unless ``force``; anything off the machine is a clear error naming what
to do instead, and is never fetched. Also the Inductor cache helpers."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import BaseModel

import falkit as fal
from falkit import toolkit
from falkit.toolkit import DownloadError, FalTookitException
from falkit.toolkit import utils as toolkit_utils

#: A host that cannot resolve (RFC 2606): were a refusal to fail, nothing is reached.
OFF_MACHINE = "https://weights.example.invalid/models/model.safetensors"


class FileServer:
    """A real HTTP file server on 127.0.0.1 (stdlib), in a thread, for loopback reads:
    ``add(path, body, headers)`` and ``redirect(path, location)``; counts GETs."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                status, headers, body = routes.get(self.path, (404, {}, b"not found"))
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="files"
        )
        self._thread.start()

    def add(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        self.routes[path] = (200, headers or {}, body)
        return self.url + path

    def redirect(self, path: str, location: str) -> str:
        self.routes[path] = (302, {"Location": location}, b"")
        return self.url + path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own cache directory, and no opt-in to remote downloads."""
    root = tmp_path / "cache"
    monkeypatch.setenv("FALKIT_CACHE_DIR", str(root))
    monkeypatch.delenv("FALKIT_ALLOW_REMOTE_DOWNLOADS", raising=False)
    return root


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".falkit"))


# -- fal's directories -------------------------------------------------------------------


def test_fals_directories_live_in_the_cache_directory(cache: Path, monkeypatch):
    assert cache == toolkit.FAL_PERSISTENT_DIR
    assert cache / ".fal" / "model_weights" == toolkit.FAL_MODEL_WEIGHTS_DIR
    assert cache / ".fal" / "repos" == toolkit.FAL_REPOSITORY_DIR
    assert toolkit_utils.FAL_MODEL_WEIGHTS_DIR == toolkit.FAL_MODEL_WEIGHTS_DIR
    # the env var is read on each use; unset, the user's cache directory is the default
    monkeypatch.delenv("FALKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache.parent / "xdg" / "falkit" == toolkit.FAL_PERSISTENT_DIR
    with pytest.raises(AttributeError):
        toolkit.FAL_NOTHING_DIR  # noqa: B018


# -- download_file -----------------------------------------------------------------------


def test_download_file_from_a_path_file_url_and_data_uri(tmp_path: Path, cache: Path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 1000)
    target = tmp_path / "out"
    got = toolkit.download_file(str(source), target)
    assert got == target.resolve() / "weights.bin" and got.read_bytes() == source.read_bytes()
    assert toolkit.download_file(source.as_uri(), target) == got  # file://
    # a relative target_dir is under fal's /data, here the cache directory
    uri = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    from_data = toolkit.download_file(uri, "inputs")
    assert from_data.parent == cache / "inputs"
    assert from_data.name == hashlib.sha256(uri.encode()).hexdigest()  # fal's name for it
    assert from_data.read_bytes() == b"hello"
    assert leftovers(target) == [] and leftovers(cache / "inputs") == []
    with pytest.raises(DownloadError, match="does not exist"):
        toolkit.download_file(str(tmp_path / "missing.bin"), target)


def test_download_file_over_loopback_names_reuses_and_forces(files: FileServer, tmp_path):
    url = files.add("/models/v1/model.safetensors", b"a" * 4096)
    named = files.add(
        "/download?id=7", b"named", {"Content-Disposition": 'attachment; filename="x.ckpt"'}
    )
    got = toolkit.download_file(url, tmp_path)
    assert got.name == "model.safetensors" and got.read_bytes() == b"a" * 4096
    assert toolkit.download_file(named, tmp_path).name == "x.ckpt"  # the server's name wins
    # a file of the size the server declares is kept; force writes it again
    got.write_bytes(b"b" * 4096)
    assert toolkit.download_file(url, tmp_path).read_bytes() == b"b" * 4096
    assert toolkit.download_file(url, tmp_path, force=True).read_bytes() == b"a" * 4096
    # a file of another size is replaced
    got.write_bytes(b"short")
    assert toolkit.download_file(url, tmp_path).read_bytes() == b"a" * 4096
    assert leftovers(tmp_path) == []


def test_download_file_is_bounded_and_atomic(files: FileServer, tmp_path: Path):
    big = files.add("/big.bin", b"x" * (2 * 1024 * 1024 + 1))
    with pytest.raises(DownloadError, match="over the limit"):
        toolkit.download_file(big, tmp_path, filesize_limit=2)  # megabytes, as fal's
    source = tmp_path / "big-local.bin"
    source.write_bytes(b"y" * (1024 * 1024 + 1))
    with pytest.raises(DownloadError, match="over the limit"):
        toolkit.download_file(str(source), tmp_path / "t", filesize_limit=1)
    # a failed download leaves the old file whole and no temporary file behind
    target_dir = tmp_path / "kept"
    target_dir.mkdir()
    (target_dir / "big.bin").write_bytes(b"old")
    with pytest.raises(DownloadError):
        toolkit.download_file(big, target_dir, filesize_limit=1)
    assert (target_dir / "big.bin").read_bytes() == b"old"
    assert leftovers(target_dir) == []
    missing = files.url + "/nothing-here"
    with pytest.raises(DownloadError, match="HTTP 404"):
        toolkit.download_file(missing, tmp_path)


def test_sources_off_the_machine_are_refused_with_what_to_do(files: FileServer, tmp_path):
    with pytest.raises(DownloadError) as refused:
        toolkit.download_file(OFF_MACHINE, tmp_path)
    message = str(refused.value)
    assert "does not download from other hosts" in message
    assert str(tmp_path) in message and "FALKIT_ALLOW_REMOTE_DOWNLOADS=1" in message
    # a loopback server cannot bounce a read off the machine
    bounced = files.redirect("/elsewhere", OFF_MACHINE)
    with pytest.raises(DownloadError, match="other hosts"):
        toolkit.download_file(bounced, tmp_path)
    # ... while a redirect on loopback is followed
    files.add("/real.bin", b"real")
    assert toolkit.download_file(files.redirect("/moved", "/real.bin"), tmp_path).name == "real.bin"
    for source in ("s3://bucket/key", "hf://org/model", "ftp://127.0.0.1/x"):
        with pytest.raises(DownloadError, match="local path"):
            toolkit.download_file(source, tmp_path)
    assert leftovers(tmp_path) == []


# -- download_model_weights --------------------------------------------------------------


def test_download_model_weights_into_the_cache_and_reused(files: FileServer, cache: Path):
    url = files.add("/unet.safetensors", b"u" * 100)
    path = toolkit.download_model_weights(url)
    weights_dir = cache / ".fal" / "model_weights" / hashlib.sha256(url.encode()).hexdigest()
    assert path == weights_dir / "unet.safetensors" and path.read_bytes() == b"u" * 100
    assert (weights_dir / ".fal_used").exists()
    assert files.hits["/unet.safetensors"] == 1
    # present: answered without asking the server; force asks again
    assert toolkit.download_model_weights(url) == path
    assert files.hits["/unet.safetensors"] == 1
    assert toolkit.download_model_weights(url, force=True) == path
    assert files.hits["/unet.safetensors"] == 2


def test_weights_from_the_internet_are_found_where_the_error_says(cache: Path):
    with pytest.raises(DownloadError) as refused:
        toolkit.download_model_weights(OFF_MACHINE)
    weights_dir = (
        cache / ".fal" / "model_weights" / hashlib.sha256(OFF_MACHINE.encode()).hexdigest()
    )
    assert str(weights_dir) in str(refused.value)
    # the user puts the file there by hand: found, with no download
    (weights_dir / "model.safetensors").write_bytes(b"by hand")
    assert toolkit.download_model_weights(OFF_MACHINE).read_bytes() == b"by hand"
    with pytest.raises(DownloadError):
        toolkit.download_model_weights(OFF_MACHINE, force=True)


class WeightsInput(BaseModel):
    name: str


def test_an_app_downloads_its_weights_in_setup_over_loopback(serve, files: FileServer):
    weights_url = files.add("/lora.bin", b"lora-weights")

    class Weighted(fal.App):
        def setup(self) -> None:
            self.path = fal.toolkit.download_model_weights(weights_url)

        @fal.endpoint("/")
        def run(self, input: WeightsInput) -> dict:
            return {"name": input.name, "weights": self.path.read_text(), "at": str(self.path)}

    server = serve(Weighted)
    answer = server.client.call("/", {"name": "a"})
    assert answer["weights"] == "lora-weights"
    assert Path(answer["at"]).parent.parent == toolkit.FAL_MODEL_WEIGHTS_DIR


# -- clone_repository --------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@localhost",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@localhost",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    origin = tmp_path / "origin" / "mylib"
    origin.mkdir(parents=True)
    git("init", "--quiet", cwd=origin)
    (origin / "mylib_mod.py").write_text("VERSION = 1\n")
    git("add", ".", cwd=origin)
    git("commit", "--quiet", "-m", "one", cwd=origin)
    first = git("rev-parse", "HEAD", cwd=origin)
    (origin / "mylib_mod.py").write_text("VERSION = 2\n")
    git("commit", "--quiet", "-am", "two", cwd=origin)
    return origin, first, git("rev-parse", "HEAD", cwd=origin)


def test_clone_repository_from_this_machine(repo, cache: Path, monkeypatch):
    origin, first, _ = repo
    monkeypatch.setattr(sys, "path", list(sys.path))
    cloned = toolkit.clone_repository(str(origin), commit_hash=first, include_to_path=True)
    assert cloned == cache / ".fal" / "repos" / f"mylib-{first[:8]}"
    assert (cloned / "mylib_mod.py").read_text() == "VERSION = 1\n"
    assert sys.path[0] == str(cloned)
    # at that commit already: kept as it is (a local edit survives); force clones again
    (cloned / "scratch.txt").write_text("mine")
    assert toolkit.clone_repository(origin.as_uri(), commit_hash=first) == cloned
    assert (cloned / "scratch.txt").exists()
    again = toolkit.clone_repository(str(origin), commit_hash=first, force=True)
    assert again == cloned and not (cloned / "scratch.txt").exists()
    latest = toolkit.clone_repository(str(origin), target_dir=origin.parent.parent / "r")
    assert latest.name == "mylib" and (latest / "mylib_mod.py").read_text() == "VERSION = 2\n"
    assert [p.name for p in latest.parent.iterdir()] == ["mylib"]  # no temporary left
    with pytest.raises(ValueError, match="too short"):
        toolkit.clone_repository(str(origin), commit_hash="abc")
    with pytest.raises(FalTookitException, match="no such repository"):
        toolkit.clone_repository(str(origin.parent / "absent"))


def test_a_repository_on_the_internet_is_cloned_by_hand(repo, cache: Path):
    url = "https://git.example.invalid/org/mylib.git"
    origin, first, _ = repo
    with pytest.raises(FalTookitException) as refused:
        toolkit.clone_repository(url, commit_hash=first)
    expected = cache / ".fal" / "repos" / f"mylib-{first[:8]}"
    assert f"git clone --recursive {url} {expected}" in str(refused.value)
    # cloned by hand where the message says: used as it is, with no network
    git("clone", "--quiet", str(origin), str(expected), cwd=origin.parent)
    git("checkout", "--quiet", first, cwd=expected)
    assert toolkit.clone_repository(url, commit_hash=first) == expected


# -- the Inductor cache ------------------------------------------------------------------


def test_inductor_cache_is_saved_and_loaded_in_the_cache_directory(cache: Path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored-after-the-test")
    gpu = toolkit.get_gpu_type()
    assert isinstance(gpu, str) and gpu and "NVIDIA" not in gpu
    assert toolkit.load_inductor_cache("model/v1") == ""  # nothing saved yet
    local = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    assert local.parent == cache
    with toolkit.synchronized_inductor_cache("model/v1"):
        (local / "kernels").mkdir(parents=True)
        (local / "kernels" / "k1.so").write_bytes(b"compiled")
    archive = cache / "inductor-caches" / gpu / "model" / "v1.zip"
    assert archive.is_file()
    shutil.rmtree(local)
    unpacked = toolkit.load_inductor_cache("model/v1")
    assert unpacked and (local / "kernels" / "k1.so").read_bytes() == b"compiled"
    before = archive.stat().st_mtime_ns
    toolkit.sync_inductor_cache("model/v1", unpacked)  # unchanged: not written again
    assert archive.stat().st_mtime_ns == before
