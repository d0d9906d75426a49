"""``KVStore`` locally: fal's methods and answers (as fal's integration tests use them),
fal's ``ttl`` rule, namespaces, values that outlive the object and are shared by other
processes, and an App keeping state in it over a real server."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from pydantic import BaseModel

import falkit as fal
from falkit.toolkit import KVStore, KVStoreException
from falkit.toolkit.kv import database_path


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FALKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_set_get_and_a_missing_key(cache: Path):
    kv = KVStore("test")
    kv.set("test", "test")
    assert kv.get("test") == "test"
    assert kv.get("test2") is None
    kv.set("test", "replaced")
    assert kv.get("test") == "replaced"
    assert database_path() == cache / "kv.sqlite3"


def test_delete_is_idempotent():
    kv = KVStore("test")
    key = f"delete-{uuid.uuid4()}"
    kv.set(key, "value")
    kv.delete(key)
    assert kv.get(key) is None
    kv.delete(key)  # not there: still fine


def test_ttl_follows_fals_rule():
    kv = KVStore("test")
    kv.set("ttl", "value", ttl=60)
    assert kv.get("ttl") == "value"
    kv.set("month", "value", ttl=30 * 24 * 3600)
    for bad in (59, 30 * 24 * 3600 + 1, 0, -5, 1.5, True):
        with pytest.raises(KVStoreException, match="from 60 to 2592000"):
            kv.set("ttl", "other", ttl=bad)  # type: ignore[arg-type]
    assert kv.get("ttl") == "value"  # a refused set changed nothing


def test_an_expired_value_is_gone():
    kv = KVStore("test")
    kv.set("soon", "value", ttl=60)
    # The stored expiry moved into the past, as time would move it.
    with closing(sqlite3.connect(database_path())) as db, db:
        db.execute("UPDATE kv SET expires = expires - 120 WHERE key = 'soon'")
    assert kv.get("soon") is None


def test_values_are_strings_and_keys_are_not_empty():
    kv = KVStore("test")
    with pytest.raises(KVStoreException, match="is a str"):
        kv.set("k", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(KVStoreException, match="non-empty"):
        kv.get("")


def test_namespaces_are_apart_and_values_outlive_the_object():
    KVStore("a").set("key", "in a")
    KVStore("b").set("key", "in b")
    assert KVStore("a").get("key") == "in a"
    assert KVStore("b").get("key") == "in b"
    KVStore("a").delete("key")
    assert KVStore("b").get("key") == "in b"


WRITER = """
import sys
from falkit.toolkit import KVStore
kv = KVStore("shared")
for i in range(40):
    kv.set(f"{sys.argv[1]}-{i}", str(i))
"""


def test_other_processes_share_the_store(cache: Path):
    # Two other processes write at once while this one writes too.
    env_python = sys.executable
    writers = [subprocess.Popen([env_python, "-c", WRITER, name], env=_env(cache)) for name in "pq"]
    mine = KVStore("shared")
    for i in range(40):
        mine.set(f"r-{i}", str(i))
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    for name in "pqr":
        assert [mine.get(f"{name}-{i}") for i in range(40)] == [str(i) for i in range(40)]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "FALKIT_CACHE_DIR": str(cache)}


class Visit(BaseModel):
    page: str


def test_an_app_keeps_state_in_the_store(serve):
    class Counter(fal.App):
        def setup(self) -> None:
            self.kv = fal.toolkit.KVStore("visits")

        @fal.endpoint("/")
        def visit(self, input: Visit) -> dict:
            seen = int(self.kv.get(input.page) or 0) + 1
            self.kv.set(input.page, str(seen))
            return {"page": input.page, "visits": seen}

    server = serve(Counter)
    answers = [server.client.call("/", {"page": "home"})["visits"] for _ in range(3)]
    assert answers == [1, 2, 3]
    assert KVStore("visits").get("home") == "3"  # the same store, from outside the App
