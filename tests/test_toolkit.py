"""``fal.toolkit`` locally (``falkit.toolkit``): an App takes and answers ``Image``/``File``
the way fal apps do, over a real server; files live in ``data:`` URIs; bad URLs are 422s;
every name, field, schema and signature is fal's own (checked against the installed SDK);
and an export maps the toolkit, its modules included, onto fal's."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import inspect
import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage
from pydantic import BaseModel, Field, ValidationError

import falkit as fal
import falkit.toolkit
from falkit.export import FAL_TOOLKIT_MODULES, export_notebook
from falkit.toolkit import File, Image, ImageSize, ImageSizeInput, get_image_size


class Request(BaseModel):
    image: Image = Field(description="The picture to flip")
    image_size: ImageSizeInput = "square"


class Answer(BaseModel):
    image: Image
    original_size: list[int]
    target: ImageSize


class Flipper(fal.App):
    @fal.endpoint("/")
    def flip(self, input: Request) -> Answer:
        picture = input.image.to_pil()
        flipped = picture.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT)
        return Answer(
            image=fal.toolkit.Image.from_pil(flipped),
            original_size=list(picture.size),
            target=get_image_size(input.image_size),
        )

    @fal.endpoint("/file")
    def echo_file(self, input: dict) -> File:
        data = File.model_validate(input["file"]).as_bytes()
        return File.from_bytes(data[::-1], "application/octet-stream", "reversed.bin")


def picture(width: int = 6, height: int = 4) -> PILImage.Image:
    image = PILImage.new("RGB", (width, height), (0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0))  # a red pixel top left
    return image


def png_uri(image: PILImage.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_an_app_takes_and_answers_images_over_http(serve):
    server = serve(Flipper)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # an image as a bare URL string, as fal clients send it
        answer = client.post("/", json={"image": png_uri(picture()), "image_size": "landscape_4_3"})
        # ... or as an object with a url
        again = client.post("/", json={"image": {"url": png_uri(picture(3, 2))}})
        bad_scheme = client.post("/", json={"image": "ftp://example.com/a.png"})
        bad_data = client.post("/", json={"image": "data:image/png;base64,@@not base64@@"})
        after = client.post("/file", json={"file": "data:text/plain;base64,YWJj"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["original_size"] == [6, 4]
    assert body["target"] == {"width": 1024, "height": 768}
    image = body["image"]
    assert image["content_type"] == "image/png" and image["width"] == 6 and image["height"] == 4
    assert image["url"].startswith("data:image/png;base64,")
    decoded = base64.b64decode(image["url"].split(",", 1)[1])
    assert image["file_size"] == len(decoded) and image["file_name"].endswith(".png")
    flipped = PILImage.open(io.BytesIO(decoded)).convert("RGB")
    assert flipped.getpixel((5, 0)) == (255, 0, 0) and flipped.getpixel((0, 0)) == (0, 0, 0)
    assert again.json()["original_size"] == [3, 2]
    assert again.json()["target"] == {"width": 512, "height": 512}
    for bad, reason in [(bad_scheme, "valid URL"), (bad_data, "malformed data URI")]:
        assert bad.status_code == 422
        assert reason in json.dumps(bad.json()["detail"])
    # bad input lost nothing: the server answers the next request
    assert after.status_code == 200
    assert File.model_validate(after.json()).as_bytes() == b"cba"
    assert after.json()["file_name"] == "reversed.bin"


def test_files_from_paths_save_and_download(tmp_path: Path, serve):
    source = tmp_path / "notes.txt"
    source.write_text("hello toolkit")
    file = File.from_path(source)
    assert (file.content_type, file.file_name, file.file_size) == ("text/plain", "notes.txt", 13)
    target = file.save(tmp_path / "copy.txt")
    assert target.read_text() == "hello toolkit"
    with pytest.raises(FileExistsError):
        file.save(target)
    assert file.save(target, overwrite=True) == target
    with pytest.raises(FileNotFoundError):
        File.from_path(tmp_path / "missing.txt")

    # an http URL is downloaded (here from a real server on loopback)
    server = serve(Flipper)
    remote = File.model_validate(server.url + "/openapi.json")
    assert json.loads(remote.as_bytes())["info"]["title"] == "Flipper"


def test_image_sizes_and_errors():
    assert get_image_size("portrait_16_9") == ImageSize(width=576, height=1024)
    assert get_image_size(ImageSize(width=7, height=9)).width == 7
    with pytest.raises(TypeError, match="square_hd"):  # fal's TypeError, with the presets
        get_image_size("huge")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ImageSize(width=0)
    with pytest.raises(ValidationError, match="valid URL"):
        File.model_validate("/etc/passwd")


def test_fields_are_fals_own():
    toolkit = pytest.importorskip("fal.toolkit")
    assert set(File.model_fields) <= set(toolkit.File.model_fields)
    assert set(Image.model_fields) <= set(toolkit.Image.model_fields)
    assert _constraints(ImageSize) == _constraints(
        pytest.importorskip("fal.toolkit.image").ImageSize
    )
    # what a falkit answer holds parses as fal's own Image
    mine = Image.from_pil(picture())
    theirs = toolkit.Image.model_validate(mine.model_dump())
    assert (theirs.url, theirs.width, theirs.height) == (mine.url, 6, 4)


def _constraints(model: type[BaseModel]) -> dict[str, dict[str, object]]:
    keys = ("type", "default", "exclusiveMinimum", "maximum")
    properties = model.model_json_schema()["properties"]
    return {name: {k: v for k, v in p.items() if k in keys} for name, p in properties.items()}


def test_export_maps_the_toolkit_to_fals(tmp_path: Path):
    cells = [
        "import falkit as fal\nfrom falkit.toolkit import Image, ImageSize\n"
        "from falkit import toolkit\nfrom falkit.toolkit.pydantic import FalBaseModel\n"
        "import falkit.toolkit.kv as kv",
        "class Size(FalBaseModel):\n    size: ImageSize",
        "class Pics(fal.App):\n"
        "    @fal.endpoint('/')\n"
        "    def run(self, input: Size) -> Image:\n"
        "        kv.KVStore('pics')\n"
        "        return toolkit.Image.from_bytes(b'x', 'png')\n",
    ]
    notebook = tmp_path / "pics.ipynb"
    notebook.write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "code", "source": c, "metadata": {}, "outputs": []} for c in cells
                ],
                "metadata": {},
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    source = export_notebook(notebook, "Pics")
    assert "import fal\n" in source
    assert "from fal.toolkit import Image\n" in source
    # fal.toolkit has no ImageSize: it comes from fal's module that does
    assert "from fal.toolkit.image import ImageSize" in source
    assert "from fal.toolkit.pydantic import FalBaseModel" in source
    assert "import fal.toolkit.kv as kv" in source
    assert "from fal import toolkit" in source
    assert "falkit" not in source.split('"""', 2)[2]
    compile(source, "pics.py", "exec")
    # every module the export maps is one fal has, with the names falkit's offers
    for name in FAL_TOOLKIT_MODULES:
        ours = importlib.import_module(f"falkit.toolkit.{name}")
        theirs = pytest.importorskip(f"fal.toolkit.{name}")
        public = getattr(ours, "__all__", [])
        missing = [n for n in public if not hasattr(theirs, n)]
        assert not missing, f"fal.toolkit.{name} lacks {missing}"
    assert pytest.importorskip("fal.toolkit.image").ImageSize


# -- the surface, measured against the installed fal SDK ---------------------------------


def test_every_name_of_fals_toolkit_is_here():
    theirs = pytest.importorskip("fal.toolkit")
    missing = [n for n in theirs.__all__ if not hasattr(falkit.toolkit, n)]
    assert not missing
    assert set(theirs.__all__) <= set(falkit.toolkit.__all__)
    assert fal.toolkit is falkit.toolkit
    # star-import gives every listed name (the FAL_*_DIR ones come from __getattr__)
    namespace: dict[str, object] = {}
    exec("from falkit.toolkit import *", namespace)
    assert set(falkit.toolkit.__all__) <= set(namespace)


@pytest.mark.parametrize("name", ["File", "Image", "Audio", "Video", "CompressedFile"])
def test_media_models_have_fals_fields_schema_and_signatures(name: str):
    theirs = getattr(pytest.importorskip("fal.toolkit"), name)
    ours = getattr(falkit.toolkit, name)
    assert list(ours.model_fields) == list(theirs.model_fields)
    for mode in ("validation", "serialization"):
        assert ours.model_json_schema(mode=mode) == theirs.model_json_schema(mode=mode)
    methods = [m for m in dir(theirs) if not m.startswith("_") and m not in dir(BaseModel)]
    assert methods, name
    for method in methods:
        assert hasattr(ours, method), f"{name}.{method}"
        if callable(getattr(theirs, method)):
            assert _parameters(getattr(ours, method)) == _parameters(getattr(theirs, method))


def test_functions_and_records_have_fals_signatures_and_fields():
    theirs = pytest.importorskip("fal.toolkit")
    functions = [
        "download_file",
        "download_model_weights",
        "clone_repository",
        "get_gpu_type",
        "load_inductor_cache",
        "sync_inductor_cache",
        "synchronized_inductor_cache",
        "get_image_size",
        "to_xfal",
        "Hidden",
    ]
    for name in functions:
        assert _parameters(getattr(falkit.toolkit, name)) == _parameters(getattr(theirs, name))
    for method in ("get", "set", "delete"):
        ours, fals = getattr(falkit.toolkit.KVStore, method), getattr(theirs.KVStore, method)
        assert _parameters(ours) == _parameters(fals)
    records = [
        "ImageSizeConstraints",
        "ImageValidationConfig",
        "VideoValidationConfig",
        "VideoNormalizationConfig",
    ]
    for name in records:
        ours, fals = getattr(falkit.toolkit, name), getattr(theirs, name)
        assert _dataclass_fields(ours) == _dataclass_fields(fals)
    for name in ("ImageValidationOptions", "VideoValidationOptions"):
        ours, fals = getattr(falkit.toolkit, name), getattr(theirs, name)
        assert list(ours.__annotations__) == list(fals.__annotations__)
    # the field helpers' own keyword arguments are fal's (the rest are Field's)
    for name in ("ImageSizeField", "VideoField"):
        ours = inspect.signature(getattr(falkit.toolkit, name))
        fals = inspect.signature(getattr(theirs, name), follow_wrapped=False)
        assert list(ours.parameters) == list(fals.parameters)


def test_exceptions_are_fals_names_in_falkits_tree():
    toolkit = falkit.toolkit
    for name in ("DownloadError", "FileUploadException", "KVStoreException"):
        error = getattr(toolkit, name)
        assert issubclass(error, toolkit.FalTookitException)
        assert issubclass(error, fal.FalkitError)
    from falkit.exceptions import ToolkitError

    assert issubclass(toolkit.FalTookitException, ToolkitError)


def _parameters(function: object) -> list[tuple[str, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind) for p in signature.parameters.values()]


def _dataclass_fields(record: type) -> list[tuple[str, object]]:
    return [(f.name, f.default) for f in dataclasses.fields(record)]
