"""The toolkit's schema side locally: ``FalBaseModel`` (``FIELD_ORDERS``, ``Hidden``,
``SCHEMA_IGNORES``, locations bound into values), the field helpers' ``ui`` and ``x-fal``,
the constraint records (``to_xfal``, bounds checked where declared) and fal's URL input
types, in-process and in a real server's OpenAPI document and 422s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError

import falkit as fal
from falkit.toolkit import (
    AudioField,
    FalBaseModel,
    Field,
    FileField,
    Hidden,
    ImageField,
    ImageSizeConstraints,
    ImageSizeField,
    ImageSizeInput,
    ImageValidationConfig,
    VideoField,
    VideoNormalizationConfig,
    VideoValidationConfig,
    to_xfal,
)
from falkit.toolkit.types import (
    MAX_DATA_URI_LENGTH,
    MAX_HTTPS_URL_LENGTH,
    DataUri,
    FileInput,
    ImageDataUri,
    ImageInput,
)


def properties(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()["properties"]


# -- constraints --------------------------------------------------------------------------


def test_to_xfal_emits_only_the_limits_set():
    assert to_xfal(VideoValidationConfig(max_duration=15.0)) == {"max_duration": 15.0}
    assert to_xfal(VideoValidationConfig()) == {}
    # timeout belongs to the downloader, not to what a client can check
    assert to_xfal(ImageValidationConfig(max_width=2048, timeout=5.0)) == {"max_width": 2048}
    assert to_xfal(ImageSizeConstraints(max_area=1 << 20, multiple_of=8)) == {
        "max_area": 1 << 20,
        "multiple_of": 8,
    }
    every = dict(min_width=1, max_width=2, min_frames=3, max_frames=4, max_file_size=5)
    assert to_xfal(VideoValidationConfig(**every)) == every


@pytest.mark.parametrize(
    "record", [ImageSizeConstraints, ImageValidationConfig, VideoValidationConfig]
)
def test_bounds_no_input_could_meet_are_refused_where_declared(record):
    with pytest.raises(ValueError, match=r"min_width .* must not exceed max_width"):
        record(min_width=2048, max_width=512)
    with pytest.raises(ValueError, match="must be provided together"):
        record(min_aspect_ratio=0.5)
    assert record(min_width=64, max_width=64).min_width == 64  # equal bounds pin a value
    pair = record(min_aspect_ratio=0.5, max_aspect_ratio=2.0)
    assert (pair.min_aspect_ratio, pair.max_aspect_ratio) == (0.5, 2.0)


def test_every_video_bound_is_checked():
    for low, high in [("min_duration", "max_duration"), ("min_fps", "max_fps")]:
        with pytest.raises(ValueError, match="must not exceed"):
            VideoValidationConfig(**{low: 2.0, high: 1.0})
    with pytest.raises(ValueError, match="must not exceed"):
        VideoNormalizationConfig(min_area=10, max_area=1)
    assert VideoNormalizationConfig(fps=24).fps == 24  # no aspect pair to give


# -- field helpers ------------------------------------------------------------------------


def test_field_helpers_set_fals_ui_hints():
    class Inputs(BaseModel):
        file: str = FileField(default="", description="A file")
        image: str = ImageField(default="", json_schema_extra={"examples": ["x"]})
        audio: str = AudioField(default="", json_schema_extra=lambda s: s.update(kept=1))
        video: str = VideoField(default="")
        size: ImageSizeInput = ImageSizeField(default="square")

    props = properties(Inputs)
    assert props["file"]["ui"] == {"field": "file"} and props["file"]["description"] == "A file"
    assert props["image"]["ui"] == {"field": "image"} and props["image"]["examples"] == ["x"]
    assert props["audio"]["ui"] == {"field": "audio"} and props["audio"]["kept"] == 1
    assert props["video"]["ui"] == {"field": "video"} and "x-fal" not in props["video"]
    assert "ui" not in props["size"] and "x-fal" not in props["size"]


def test_video_and_image_size_fields_document_their_limits():
    class Inputs(BaseModel):
        clip: str = VideoField(
            default="",
            constraints=VideoValidationConfig(max_duration=30.0),
            normalization=VideoNormalizationConfig(max_duration=10.0, fps=24),
            ui={"important": True},
        )
        clips: list[str] = VideoField(
            default_factory=list,
            constraints=VideoValidationConfig(min_duration=2.0),
            combined_constraints=VideoValidationConfig(max_duration=15.1),
        )
        only_reshaped: str = VideoField(
            default="", normalization=VideoNormalizationConfig(max_area=100)
        )
        size: ImageSizeInput = ImageSizeField(
            default="square",
            constraints=ImageSizeConstraints(max_width=2048, multiple_of=16),
            ui={"important": True},
        )

    props = properties(Inputs)
    assert props["clip"]["x-fal"] == {
        "max_duration": 30.0,
        "normalization": {"max_duration": 10.0, "fps": 24},
    }
    assert props["clip"]["ui"] == {"important": True, "field": "video"}
    assert props["clips"]["x-fal"] == {"min_duration": 2.0, "combined": {"max_duration": 15.1}}
    assert props["only_reshaped"]["x-fal"] == {"normalization": {"max_area": 100}}
    assert props["size"]["x-fal"] == {"max_width": 2048, "multiple_of": 16}
    assert props["size"]["ui"] == {"important": True}


# -- FalBaseModel -------------------------------------------------------------------------


def test_hidden_needs_a_field_with_a_default():
    with pytest.raises(TypeError, match="requires a Field instance"):
        Hidden("not a field")
    with pytest.raises(ValueError, match="must have a default"):
        Hidden(Field())
    for field in (Field(default=False), Field(default=None), Field(default_factory=list)):
        assert Hidden(field) is field


def test_field_orders_hidden_fields_and_schema_ignores():
    class Base(FalBaseModel):
        FIELD_ORDERS = ["prompt"]
        a_first: str = Field(default="")
        prompt: str = Field(default="")

    class Extended(Base):
        FIELD_ORDERS = ["prompt", "image"]
        image: str = Field(default="")
        debug: bool = Hidden(Field(default=False))

    props = properties(Extended)
    assert list(props)[:2] == ["prompt", "image"]
    assert props["debug"]["ui"] == {"hidden": True}
    assert "ui" not in props["a_first"]
    assert Extended(debug=True).debug is True  # still an input, only hidden in the UI

    with pytest.warns(DeprecationWarning, match="SCHEMA_IGNORES is deprecated"):

        class Legacy(FalBaseModel):
            SCHEMA_IGNORES = {"internal"}
            visible: str = Field(default="")
            internal: str = Field(default="hidden")

    assert properties(Legacy)["internal"]["ui"]["hidden"] is True
    assert "ui" not in properties(Legacy)["visible"]


def test_model_config_extras_are_kept():
    class Configured(FalBaseModel):
        model_config = {"json_schema_extra": {"x-mine": 1}}
        FIELD_ORDERS = ["b"]
        a: int = 0
        b: int = 0

    schema = Configured.model_json_schema()
    assert schema["x-mine"] == 1 and list(schema["properties"]) == ["b", "a"]


class Located:
    """A value that wants to know where it sat in the input (as fal's URL types do)."""

    def __init__(self) -> None:
        self.loc: tuple[str | int, ...] | None = None

    def _bind_context(self, loc: tuple[str | int, ...]) -> None:
        self.loc = loc


def test_values_learn_their_location():
    class Inner(BaseModel):
        model_config = {"arbitrary_types_allowed": True}
        photo: Any = None

    class Outer(FalBaseModel):
        model_config = {"arbitrary_types_allowed": True}
        single: Any = Field(default_factory=Located)
        items: list[Inner] = Field(default_factory=list)
        urls: list = Field(default_factory=list)

    first, second = Located(), Located()
    built = Outer(items=[Inner(photo=first)], urls=[Located(), second])
    assert built.single.loc == ("single",)
    assert first.loc == ("items", 0, "photo")
    assert second.loc == ("urls", 1)


# -- fal's URL input types ---------------------------------------------------------------


class UrlInput(BaseModel):
    url: FileInput


def test_file_input_accepts_https_and_data_urls_as_fal():
    for url in (
        "https://example.com",
        "https://sub.example.com/path?q=1",
        "https://example.com:8443",
        "data:text/plain;base64,SGVsbG8gV29ybGQ=",
    ):
        assert UrlInput(url=url).url == url
    assert UrlInput(url="  https://example.com  ").url == "https://example.com"
    assert UrlInput(url="  data:text/plain,Hello  ").url == "data:text/plain,Hello"
    for bad in ("http://example.com", "not-a-url", "", None, "https://127.0.0.1/x"):
        with pytest.raises(ValidationError):
            UrlInput(url=bad)
    longest = "https://example.com/" + "a" * (MAX_HTTPS_URL_LENGTH - len("https://example.com/"))
    assert UrlInput(url=longest).url == longest
    with pytest.raises(ValidationError):
        UrlInput(url=longest + "a")
    with pytest.raises(ValidationError):
        UrlInput(url="data:text/plain," + "a" * MAX_DATA_URI_LENGTH)


def test_url_inputs_are_their_types_and_read_locally(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FALKIT_CACHE_DIR", str(tmp_path))

    class ImageUrl(BaseModel):
        image: ImageInput

    uri = "data:text/plain;base64,SGVsbG8="
    value = UrlInput(url=uri).url
    assert isinstance(value, DataUri)  # on fal a plain str, without these methods
    with value.as_temp_file() as path:
        assert path.read_bytes() == b"Hello"
    assert not path.exists()
    image = ImageUrl(image="data:image/gif;base64,R0lGODlhAQABAAAAACw=").image
    assert isinstance(image, ImageDataUri)
    assert UrlInput.model_json_schema()["properties"]["url"]["anyOf"][0]["format"] == "https-url"


# -- over a real server ------------------------------------------------------------------


class Prompt(FalBaseModel):
    FIELD_ORDERS = ["prompt"]
    seed: int = Field(default=0)
    prompt: str = Field(description="Text prompt")
    debug: bool = Hidden(Field(default=False))
    reference: FileInput | None = None


class Styled(fal.App):
    @fal.endpoint("/")
    def run(self, input: Prompt) -> dict:
        return {"prompt": input.prompt, "debug": input.debug}


def test_an_apps_schema_and_422s_are_fals(serve):
    server = serve(Styled)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        schema = client.get("/openapi.json").json()
        ok = client.post("/", json={"prompt": "a cat", "debug": True})
        bad = client.post("/", json={"prompt": "a cat", "reference": "ftp://x/y"})
    props = schema["components"]["schemas"]["Prompt"]["properties"]
    assert next(iter(props)) == "prompt" and props["debug"]["ui"] == {"hidden": True}
    assert ok.status_code == 200 and ok.json() == {"prompt": "a cat", "debug": True}
    assert bad.status_code == 422
