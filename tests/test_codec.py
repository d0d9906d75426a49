"""The msgpack codec: fal's plain frames, and the opt-in array extension for numpy and
torch, in process and through a realtime session over loopback."""

from __future__ import annotations

import struct
import subprocess
import sys

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel, ConfigDict

import falkit as fal
from falkit import codec

torch = pytest.importorskip("torch")


def roundtrip(obj):
    return codec.decode_tensors(codec.encode_tensors(obj))


def test_plain_frames_are_fals_msgpack() -> None:
    obj = {"a": [1, 2.5, "x", b"\x00"], "b": None, "c": True}
    assert codec.encode(obj) == msgpack.packb(obj, use_bin_type=True)
    assert codec.decode(codec.encode(obj)) == obj


def test_arrays_need_opting_in() -> None:
    with pytest.raises(TypeError, match=r"encode_message=falkit\.codec\.encode_tensors"):
        codec.encode({"x": np.zeros(3)})
    with pytest.raises(TypeError, match="encode_tensors"):
        codec.encode({"x": torch.zeros(3)})


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.one_of(
            hnp.integer_dtypes(),
            hnp.floating_dtypes(),
            hnp.complex_number_dtypes(),
            hnp.boolean_dtypes(),
        ),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_numpy_arrays_roundtrip_exactly(array) -> None:
    back = roundtrip({"x": array})["x"]
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()
    assert back.flags.writeable


def test_non_contiguous_and_scalars() -> None:
    array = np.arange(24, dtype=np.int16).reshape(4, 6)[::2, 1::2]
    assert np.array_equal(roundtrip([array])[0], array)
    assert roundtrip({"s": np.float32(1.5), "i": np.int64(3)}) == {"s": 1.5, "i": 3}


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.uint8,
        torch.bool,
        torch.complex64,
    ],
)
def test_torch_tensors_roundtrip(dtype) -> None:
    tensor = (torch.arange(12) % 3).to(dtype).reshape(3, 4)
    back = roundtrip({"t": tensor})["t"]
    assert isinstance(back, torch.Tensor) and back.dtype == dtype and torch.equal(back, tensor)


def test_torch_edge_shapes() -> None:
    for tensor in [torch.tensor(2.5), torch.zeros(0, 3), torch.arange(10)[::3], torch.ones(2, 3).T]:
        back = roundtrip(tensor)
        assert back.shape == tensor.shape and torch.equal(back, tensor)


def test_a_tensor_travels_as_raw_bytes() -> None:
    tensor = torch.zeros(1024, 1024)  # 4 MiB
    frame = codec.encode_tensors({"t": tensor})
    assert 4 * 1024 * 1024 < len(frame) < 4 * 1024 * 1024 + 100


def test_requires_grad_tensor_is_detached() -> None:
    tensor = torch.ones(3, requires_grad=True) * 2
    assert torch.equal(roundtrip(tensor), torch.full((3,), 2.0))


def test_object_arrays_are_refused() -> None:
    with pytest.raises(TypeError, match="numeric dtype"):
        codec.encode_tensors(np.array([object()]))


def ext_payload(header: list, raw: bytes) -> bytes:
    """A ``TENSOR_EXT`` payload: u32 header length, msgpack header, raw bytes."""
    packed = msgpack.packb(header)
    return struct.pack("<I", len(packed)) + packed + raw


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (ext_payload(["torch", "nonsense", [1]], b"\x00"), "unknown torch dtype"),
        (ext_payload(["jax", "f4", [1]], b"\x00" * 4), "unknown array kind"),
        (ext_payload(["numpy", "<f4", [3]], b"\x00" * 4), "malformed array"),
        (ext_payload(["torch", "float32", [2**30]], b""), "malformed array"),
        (struct.pack("<I", 99) + b"\x90", "malformed array"),
        (b"\xc1", "malformed array"),
    ],
)
def test_malformed_extensions_are_protocol_errors(payload: bytes, message: str) -> None:
    frame = msgpack.packb(msgpack.ExtType(codec.TENSOR_EXT, payload))
    with pytest.raises(fal.ProtocolError, match=message):
        codec.decode_tensors(frame)


def test_other_extension_types_pass_through() -> None:
    frame = msgpack.packb(msgpack.ExtType(5, b"abc"))
    assert codec.decode_tensors(frame) == msgpack.ExtType(5, b"abc")


def test_importing_falkit_does_not_import_torch_or_numpy() -> None:
    code = "import sys, falkit; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_moves_to_cpu_only_when_encoded() -> None:
    tensor = torch.arange(6, device="cuda", dtype=torch.float32)
    frame = codec.encode_tensors({"t": tensor})
    assert tensor.device.type == "cuda"  # the caller's tensor stays where it was
    back = codec.decode_tensors(frame)["t"]
    assert back.device.type == "cpu" and torch.equal(back, tensor.cpu())


class Frame(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    image: torch.Tensor
    scale: float = 1.0


class TensorApp(fal.App):
    @fal.realtime(
        "/scale", encode_message=codec.encode_tensors, decode_message=codec.decode_tensors
    )
    def scale(self, input: Frame) -> dict:
        return {"image": input.image * input.scale, "mean": input.image.mean().item()}

    @fal.realtime("/plain")
    def plain(self, input: dict) -> dict:
        return {"array": np.zeros(2)}


def test_realtime_handler_takes_and_returns_tensors(serve) -> None:
    server = serve(TensorApp)
    image = torch.rand(3, 64, 64)
    with (
        server.client as client,
        client.realtime(
            "/scale", encode_message=codec.encode_tensors, decode_message=codec.decode_tensors
        ) as rt,
    ):
        rt.send(Frame(image=image, scale=2.0))
        out = rt.recv(10)
    assert torch.allclose(out["image"], image * 2)
    assert out["mean"] == pytest.approx(image.mean().item())


def test_returning_an_array_without_opting_in_is_a_clear_error(serve) -> None:
    server = serve(TensorApp)
    with server.client as client, client.realtime("/plain") as rt:
        rt.send({})
        with pytest.raises(fal.RealtimeError, match="encode_tensors"):
            rt.recv(10)
