#!/usr/bin/env bash
# GPU check: serve two small model apps on CUDA from falkit and print the device, the
# realtime round-trip latency with a GPU model, and the GPU memory freed after stop.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine (no network needed)
#
# The apps are those of the tour's notebooks 02 (a denoiser on tensor frames, realtime)
# and 04 (a small digit CNN over HTTP and realtime), restated here without their data. Needs python with
# torch, fastapi, uvicorn, msgpack, websockets, httpx, pydantic already present, or wheels
# for them in benchmarks/wheels/ (installed with --no-index: the GPU box has no network);
# falkit itself is used from this source tree. Without CUDA it runs on the CPU and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

missing=$("$PY" - <<'EOF'
import importlib.util
need = ["torch", "fastapi", "uvicorn", "msgpack", "websockets", "httpx", "pydantic", "numpy"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  if [ -d benchmarks/wheels ]; then
    echo "installing from benchmarks/wheels: $missing"
    "$PY" -m pip install -q --no-index --find-links benchmarks/wheels $missing
  else
    echo "missing: $missing (put their wheels in benchmarks/wheels/)" >&2
    exit 2
  fi
fi

exec timeout 300 "$PY" - <<'EOF'
import gc, statistics, time

import torch
from pydantic import BaseModel
from torch import nn

import falkit as fal
from falkit import codec

CUDA = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA available: {CUDA}")
if not CUDA:
    print("NO CUDA DEVICE: falling back to the CPU; GPU memory figures are not applicable")


def gpu_mb() -> float:
    return torch.cuda.memory_allocated() / 2**20 if CUDA else float("nan")


class Frame(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    id: int
    image: torch.Tensor  # 3 x 96 x 96, float32


class Result(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    ids: list[int]
    images: torch.Tensor


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 3, 3, padding=1),
        )

    def forward(self, x):
        return x - self.net(x)


class FrameApp(fal.App):
    """notebook 02's app: a denoiser over tensor frames on a batching realtime route."""

    machine_type = "GPU"

    def setup(self):
        torch.manual_seed(0)
        self.model = Denoiser().to(self.device).eval()
        # 100 MB standing in for real weights, so that the memory freed on stop shows
        self.weights = torch.zeros(25 * 2**20, device=self.device)

    @fal.realtime(
        "/realtime",
        max_batch_size=4,
        encode_message=codec.encode_tensors,
        decode_message=codec.decode_tensors,
    )
    def frames(self, first: Frame, *more: Frame) -> Result:
        batch = [first, *more]
        with torch.inference_mode():
            images = torch.stack([f.image for f in batch]).to(self.device)
            out = self.model(images)
        return Result(ids=[f.id for f in batch], images=out.cpu())


class Pixels(BaseModel):
    pixels: list[float]  # 8x8 grey levels in [0, 1]


class Prediction(BaseModel):
    label: int
    confidence: float


class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class ImageModel(fal.App):
    """notebook 04's model (its CNN, untrained here) over HTTP and realtime."""

    machine_type = "GPU"

    def setup(self):
        torch.manual_seed(0)
        self.model = DigitNet().to(self.device).eval()

    def predict(self, input: Pixels) -> Prediction:
        x = torch.tensor(input.pixels, device=self.device).view(1, 1, 8, 8)
        with torch.inference_mode():
            p = self.model(x).softmax(1)[0]
        conf, label = p.max(0)
        return Prediction(label=int(label), confidence=float(conf))

    @fal.endpoint("/")
    def classify(self, input: Pixels) -> Prediction:
        return self.predict(input)

    @fal.realtime("/realtime")
    def classify_rt(self, input: Pixels) -> Prediction:
        return self.predict(input)


ROUND_TRIPS = 200 if CUDA else 40  # a loaded CPU is slow at the 02 denoiser


def round_trips(server, make, n=ROUND_TRIPS, **kw):
    times = []
    with server.client.realtime("/realtime", **kw) as rt:
        for i in range(n + 10):
            began = time.perf_counter()
            rt.send(make())
            out = rt.recv()
            if i >= 10:  # the first few warm kernels and caches
                times.append((time.perf_counter() - began) * 1000)
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], out


def check(app_cls, make, **kw):
    gc.collect()
    before = gpu_mb()
    server = fal.serve(app_cls)
    try:
        loaded = gpu_mb()
        print(f"\n{app_cls.__name__}: device {server.device.describe()}")
        p50, p99, out = round_trips(server, make, **kw)
        print(f"  realtime round trip: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({ROUND_TRIPS} sequential)")
        if app_cls is ImageModel:
            print(f"  HTTP answer: {server.client.call('/', make())}")
    finally:
        server.stop()
    after = gpu_mb()
    if not CUDA:
        print("  GPU memory freed after stop: n/a (no CUDA device)")
        return
    print(
        f"  GPU memory allocated: before serve {before:.1f} MB, serving {loaded:.1f} MB, "
        f"after stop {after:.1f} MB -> freed {loaded - after:.1f} MB"
    )


frame = torch.rand(3, 96, 96)
check(
    FrameApp,
    lambda: {"id": 0, "image": frame},
    encode_message=codec.encode_tensors,
    decode_message=codec.decode_tensors,
)
check(ImageModel, lambda: {"pixels": [0.5] * 64})
print("\nok" + ("" if CUDA else " (on CPU: no CUDA device here)"))
EOF
