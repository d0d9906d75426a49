"""``File``, ``Image``, ``Audio``, ``Video`` and ``CompressedFile`` locally: fal's naming
and typing rules, the async variants, inputs that load lazily, reads from loopback only
and bounded, files answered inline and bounded, and Apps over a real server that take
and answer every media type with fal's schema hints."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import json
import tempfile
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException
from PIL import Image as PILImage
from pydantic import BaseModel, ValidationError
from test_toolkit_downloads import OFF_MACHINE, FileServer

import falkit as fal
from falkit.toolkit import (
    Audio,
    AudioField,
    CompressedFile,
    DownloadError,
    File,
    FileUploadException,
    Image,
    Video,
    VideoField,
    VideoValidationConfig,
)
from falkit.toolkit import file as file_module
from falkit.toolkit.image import read_image_from_url


@pytest.fixture
def files():
    server = FileServer()
    yield server
    server.close()


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (255, 255, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- making files, as fal's in-memory repository does -----------------------------------


def test_from_bytes_names_and_types_files_as_fal():
    content = b"Hello World"
    file = File.from_bytes(content, repository="in_memory")
    assert file.url == "data:application/octet-stream;base64," + base64.b64encode(content).decode()
    assert file.as_bytes() == content and file.file_size == len(content)
    assert file.content_type == "application/octet-stream" and file.file_name.endswith(".bin")
    typed = File.from_bytes(content, content_type="text/plain")
    assert typed.file_name.endswith(".txt")
    named = File.from_bytes(content, file_name="hello.txt")
    assert (named.content_type, named.file_name) == ("text/plain", "hello.txt")
    # file_data is fal's field too, and never part of an answer
    assert file.file_data == content and "file_data" not in file.model_dump()
    assert "file_data" not in file.model_dump_json()


def test_repository_ids_are_fals():
    with pytest.raises(ValueError, match="not a valid built-in file repository"):
        File.from_bytes(b"x", repository="does-not-exist")
    with pytest.warns(DeprecationWarning, match="cdn"):
        File.from_bytes(b"x", repository="cdn")
    # any of fal's repositories: the file stays on this machine, in its data: URI
    assert File.from_bytes(b"x", repository="gcp_storage").url.startswith("data:")


def test_async_variants():
    async def run(tmp: Path) -> None:
        made = await File.from_bytes_async(b"Hello async", repository="in_memory")
        assert made.as_bytes() == b"Hello async"
        source = tmp / "hello.txt"
        source.write_text("Hello from async path", encoding="utf-8")
        from_path = await File.from_path_async(source, content_type="text/plain")
        assert (from_path.file_name, from_path.content_type) == ("hello.txt", "text/plain")
        assert from_path.file_size == source.stat().st_size
        target = tmp / "saved.bin"
        assert await made.save_async(target) == target.resolve()
        with pytest.raises(FileExistsError):
            await made.save_async(target)
        assert await made.save_async(target, overwrite=True) == target.resolve()
        assert target.read_bytes() == b"Hello async"

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


def test_reserve_and_oversized_files_say_what_to_do(tmp_path: Path, monkeypatch):
    with pytest.raises(FileUploadException, match=r"File.from_bytes"):
        File.reserve(content_type="image/png")
    monkeypatch.setattr(file_module, "MAX_INLINE_BYTES", 10)
    with pytest.raises(FileUploadException, match="answer its path"):
        File.from_bytes(b"x" * 11)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 11)
    with pytest.raises(FileUploadException, match="MAX_INLINE_BYTES"):
        File.from_path(big)
    assert File.from_bytes(b"x" * 10).file_size == 10


# -- inputs: lazy, then read from this machine only, bounded ------------------------------


class FileInput(BaseModel):
    file: File


def test_inputs_load_lazily_and_read_only_from_this_machine():
    remote = FileInput(file="https://example.invalid/somefile.txt").file  # no download
    assert remote.url == "https://example.invalid/somefile.txt" and remote.file_size is None
    with pytest.raises(ValueError, match="value must be a valid URL"):
        FileInput(file="not_a_valid_url")
    given = {"url": "https://example.invalid/f.txt", "content_type": "text/plain"}
    assert FileInput(file=given).file.content_type == "text/plain"
    with pytest.raises(DownloadError, match="FALKIT_ALLOW_REMOTE_DOWNLOADS"):
        FileInput(file=OFF_MACHINE).file.as_bytes()
    # a client may not make the server read its own disk
    with pytest.raises(ValidationError):
        FileInput(file={"url": "file:///etc/passwd"})
    sneaked = File.model_construct(url="/etc/passwd")
    with pytest.raises(DownloadError, match="http"):
        sneaked.as_bytes()


def test_reads_over_loopback_are_bounded_and_saves_atomic(files, tmp_path: Path, monkeypatch):
    url = files.add("/clip.bin", b"c" * 5000)
    assert File.model_validate(url).as_bytes() == b"c" * 5000
    saved = File.model_validate(url).save(tmp_path / "sub" / "clip.bin")
    assert saved.read_bytes() == b"c" * 5000
    monkeypatch.setattr(file_module, "MAX_DOWNLOAD_BYTES", 4999)
    with pytest.raises(DownloadError, match="over the limit"):
        File.model_validate(url).as_bytes()
    with pytest.raises(DownloadError):
        File.model_validate(url).save(saved, overwrite=True)
    assert saved.read_bytes() == b"c" * 5000  # the failed save left the old file whole
    assert sorted(p.name for p in saved.parent.iterdir()) == ["clip.bin"]


# -- images -------------------------------------------------------------------------------


def test_images_from_pil_bytes_and_urls(files):
    made = Image.from_pil(PILImage.new("RGB", (1, 1), (255, 255, 255)), repository="in_memory")
    assert (made.width, made.height, made.content_type) == (1, 1, "image/png")
    again = Image.from_bytes(png_bytes(), format="png")
    assert again.to_pil().size == (3, 2) and again.width is None  # no size given
    jpeg = Image.from_pil(PILImage.new("RGB", (4, 4)), format="jpeg")
    assert jpeg.content_type == "image/jpeg" and jpeg.file_name.endswith(".jpg")
    served = files.add("/pic.png", png_bytes(5, 7))
    assert Image.model_validate(served).to_pil().size == (5, 7)
    assert read_image_from_url(served).size == (5, 7)


def test_to_pil_turns_the_image_upright():
    buffer = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotated 90 degrees
    PILImage.new("RGB", (8, 2)).save(buffer, format="JPEG", exif=exif)
    image = Image.from_bytes(buffer.getvalue(), format="jpeg")
    assert image.to_pil().size == (2, 8)


def test_unreadable_images_are_fals_422():
    for url in ("data:image/png;base64,AAAA", OFF_MACHINE):
        with pytest.raises(HTTPException) as failed:
            read_image_from_url(url)
        assert failed.value.status_code == 422
        assert "Could not load image from url" in failed.value.detail


# -- media over a real server ------------------------------------------------------------


class Clip(BaseModel):
    video: Video = VideoField(
        description="The clip", constraints=VideoValidationConfig(max_duration=15.0)
    )
    voice: Audio | None = AudioField(default=None)


class Dub(BaseModel):
    audio: Audio
    video_size: int


class Archive(BaseModel):
    archive: CompressedFile


class Picture(BaseModel):
    url: str


class Studio(fal.App):
    @fal.endpoint("/dub")
    async def dub(self, input: Clip) -> Dub:
        made = await Audio.from_bytes_async(input.video.as_bytes()[::-1], "audio/wav")
        return Dub(audio=made, video_size=len(input.video.as_bytes()))

    @fal.endpoint("/unzip")
    def unzip(self, input: Archive) -> dict:
        names = sorted(p.name for p in input.archive)
        texts = sorted(p.name for p in input.archive.glob("*.txt"))
        return {"names": names, "texts": texts}

    @fal.endpoint("/picture")
    def picture(self, input: Picture) -> dict:
        return {"size": list(read_image_from_url(input.url).size)}


def test_an_app_takes_and_answers_audio_video_and_archives(serve):
    server = serve(Studio)
    video = "data:video/mp4;base64," + base64.b64encode(b"fake-mp4").decode()
    dubbed = server.client.call("/dub", {"video": video})
    assert dubbed["video_size"] == 8
    audio = Audio.model_validate(dubbed["audio"])
    assert audio.as_bytes() == b"4pm-ekaf" and audio.content_type == "audio/wav"
    assert set(dubbed["audio"]) == {"url", "content_type", "file_name", "file_size"}
    archive = zip_bytes({"a.txt": b"a", "b.bin": b"b", "c.txt": b"c"})
    uri = "data:application/zip;base64," + base64.b64encode(archive).decode()
    assert server.client.call("/unzip", {"archive": uri}) == {
        "names": ["a.txt", "b.bin", "c.txt"],
        "texts": ["a.txt", "c.txt"],
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        bad_picture = client.post("/picture", json={"url": "data:image/png;base64,AAAA"})
        schema = client.get("/openapi.json").json()
    assert bad_picture.status_code == 422  # fal's answer for an unreadable image
    assert "Could not load image from url" in json.dumps(bad_picture.json())
    # the OpenAPI document carries fal's UI hints and limits, shaped as fal's SDK shapes them
    models = schema["components"]["schemas"]
    clip = models["Clip"]["properties"]
    assert clip["video"]["x-fal"] == {"max_duration": 15.0}
    assert clip["voice"]["ui"] == {"field": "audio"}
    assert models["Video"]["ui"] == {"field": "video"}  # on the model clip["video"] refers to
    assert all(models[name]["ui"] == {"field": "audio"} for name in models if "Audio" in name)


def test_archives_are_bounded_and_cleaned_up(monkeypatch):
    archive = CompressedFile.from_bytes(zip_bytes({"m.txt": b"x" * 100}), "application/zip")
    extracted = [p.read_bytes() for p in archive]
    assert extracted == [b"x" * 100]
    directory = Path(archive.extract_dir or "")
    assert directory.is_dir()
    del archive
    gc.collect()
    assert not directory.exists()
    monkeypatch.setattr(file_module, "MAX_EXTRACTED_BYTES", 99)
    bomb = CompressedFile.from_bytes(zip_bytes({"m.txt": b"x" * 100}), "application/zip")
    with pytest.raises(FileUploadException, match="expands to 100 bytes"):
        list(bomb)
    assert bomb.extract_dir is None
