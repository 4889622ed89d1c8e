"""Where L2F's generator runs: PyTorch, ONNX Runtime, PyTorch in bfloat16 or with int8 convolutions, whichever is
measured fastest here.

L2F is ~90% of the time of a video on a CPU. The same generator exported to ONNX (opset 20: its landmark flow
uses affine_grid) gives the same frames (> 88 dB PSNR). No single answer holds for every CPU (PyTorch's oneDNN and
ONNX Runtime's MLAS pick their kernels by the CPU's instructions), so ``choose`` times the candidates on this
machine, once, and remembers the answer per CPU, checkpoint, generator code and library versions (``remembered``
reads it back before anything is loaded). PyTorch is the path that always works: on CUDA, without onnxruntime, or
when the export fails or does not match.

On a CPU that computes bfloat16 natively (AVX-512 BF16 or AMX: ``native_bf16``) PyTorch's autocast to bfloat16
is a third candidate: 1.6-1.7x float32's speed on the 2-core AMD EPYC this project is built on, frames 66-69 dB
from float32's on real faces (the generator keeps its flow, warp and blend in float32), and checked on the bundled
face before it is used. Where bfloat16 is emulated (AVX2 only) it is ~7x *slower*, so it is never tried there.

On x86, PyTorch's oneDNN computes convolutions in int8 (``int8_generator``): the U-Net's 13 dense 3x3
convolutions after the stem and the head take 8-bit inputs and 8-bit weights per output channel; everything else
stays float32. The inputs' ranges are measured once, on the bundled face and on black, white and noise photos (the
U-Net's layers read features a GroupNorm scaled at most one linear layer before, so their ranges hardly depend on
the photo; the head's does more). ~1.3x float32's frames/s on the 2-core Intel Xeon this was measured on (1.2-1.5x
by rounds), frames 62-65 dB from float32's on real faces as uint8 (70-75 dB before rounding; docs/benchmarks.md);
checked on the bundled face before it is used, once per CPU class.

The exported model and the choice live in ``cache_dir()`` (``TALKFACE_CACHE``, else ~/.cache/talkface); nothing
is ever downloaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)
BACKENDS = ("auto", "torch", "onnx", "bf16", "int8")
CHOICE_VERSION = 6  # part of the remembered choice's key: a new way of choosing times the candidates again
BATCHES = (4, 8)  # the batch sizes ``choose`` times the chosen backend at
MIN_PSNR = 40.0  # dB: an exported generator that differs more than this from PyTorch's is not used
INT8_VERSION = 1  # part of the kept int8 ranges' name: a new way of measuring them measures them again
_INPUTS = ("photo", "heatmaps", "identity_heatmaps", "landmarks", "identity_landmarks")


def cache_dir() -> Path:
    return Path(os.environ.get("TALKFACE_CACHE") or Path.home() / ".cache" / "talkface")


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else (platform.processor() or "unknown CPU")


def cpu_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return set(found.group(1).split()) if found else set()


def cpu_class(flags: set[str] | None = None) -> str:
    """The instruction set class that decides which kernels run: "avx512-bf16", "avx512", "avx2" or "other".
    PyTorch can be held to AVX2 on a bigger CPU (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2): then "avx2"."""
    flags = cpu_flags() if flags is None else flags
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2" and "avx2" in flags:
        return "avx2"
    if "avx512f" in flags:
        return "avx512-bf16" if "avx512_bf16" in flags else "avx512"
    return "avx2" if "avx2" in flags else "other"


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (AVX-512 BF16 or AMX-BF16), and PyTorch is
    not held to AVX2; elsewhere bfloat16 is emulated and several times slower than float32."""
    flags = cpu_flags() if flags is None else flags
    return cpu_class(flags) == "avx512-bf16" or ("amx_bf16" in flags and cpu_class(flags) != "avx2")


def int8_available() -> bool:
    """Whether PyTorch here has oneDNN's int8 convolutions (its x86 builds do) on an x86 CPU with AVX2 or more."""
    try:
        ops = torch.ops.onednn.qconv2d_pointwise, torch.ops.onednn.qconv_prepack
    except (AttributeError, RuntimeError):
        return False
    return bool(ops) and torch.backends.mkldnn.is_available() and cpu_class() != "other"


class Int8Conv2d(nn.Module):
    """A float32 ``nn.Conv2d`` computed in int8 by oneDNN: the input quantized to 8 bits over a fixed range
    (``low``..``high``, measured beforehand: ``int8_generator``), the weights to 8 bits per output channel, the
    sum in int32 and the output back in float32. Inference only."""

    def __init__(self, conv: nn.Conv2d, low: float, high: float):
        super().__init__()
        weight = conv.weight.detach().float().cpu()
        self.w_scale = (weight.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127).double()
        qweight = torch.round(weight / self.w_scale.float()[:, None, None, None]).clamp(-128, 127).to(torch.int8)
        low, high = min(low, 0.0), max(high, 0.0)  # real 0 exactly representable: the zero padding stays zero
        self.x_scale = max(high - low, 1e-8) / 255
        self.x_zero = int(min(max(round(-low / self.x_scale), 0), 255))
        self.geometry = [list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups]
        self.w_zero = torch.zeros(len(self.w_scale), dtype=torch.int64)
        self.bias = None if conv.bias is None else conv.bias.detach().float().cpu()
        self.qweight = qweight.contiguous(memory_format=torch.channels_last)
        self.packed: dict[tuple[int, ...], torch.Tensor] = {}  # oneDNN's packed weights, per input shape

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """The weights packed by oneDNN for inputs shaped like `x`, once per shape (a video's batches have one or
        two shapes: its batch, and its last, shorter one).

        Packed without the input's shape, oneDNN guessed a layout that one layer's kernel (384 → 192 channels at
        16²) did not take: it re-packed its weights on every call, 3.7 of the generator's ~80 ms for 4 frames on
        one core (docs/benchmarks.md). The layout can differ by batch too (one frame against several): hence the
        whole shape. Two streams packing the same shape at once both get the same weights."""
        key = tuple(x.shape)
        packed = self.packed.get(key)
        if packed is None:
            packed = self.packed[key] = torch.ops.onednn.qconv_prepack(
                self.qweight, self.w_scale, self.x_scale, self.x_zero, *self.geometry, list(x.shape))
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # quantize_per_tensor is the vectorized quantizer; its quint8 storage viewed as the uint8 oneDNN reads
        q = torch.quantize_per_tensor(x, self.x_scale, self.x_zero, torch.quint8).view(torch.uint8)
        return torch.ops.onednn.qconv2d_pointwise(q, self.x_scale, self.x_zero, self.pack(x), self.w_scale,
                                                  self.w_zero, self.bias, *self.geometry, 1.0, 0, torch.float32,
                                                  "none", [], "")


def int8_layers(generator: nn.Module) -> list[str]:
    """The convolutions the int8 generator computes in int8: the U-Net's dense 3x3 ones after the stem (~40% of
    float32's time, 2-4x faster in int8) and the head (its 6 output channels leave float32's kernels a third busy:
    2.3x faster in int8). Kept float32: the stem (its photo share is computed once, by linearity, and it reads the
    heatmaps) and the 1x1 and depthwise ones (no faster, or a few percent, for 2-3% more error each)."""
    return [name for name, m in generator.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size == (3, 3)
            and (name == "head" or (name.startswith("unet.") and not name.startswith(("unet.stem", "unet.to_full"))))]


def _open_mouths(face: tuple[torch.Tensor, torch.Tensor], batch: int = 4, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """`face` with its lower lip lowered 0-10 px across a batch: the frames int8 is calibrated and checked on."""
    photo, points = face
    g = torch.Generator().manual_seed(seed)
    moved = points.float()[None].repeat(batch, 1, 1) + torch.randn(batch, 68, 2, generator=g) * 0.5
    moved[:, [55, 56, 57, 58, 59, 65, 66, 67], 1] += torch.linspace(0, 10, batch)[:, None]
    return photo, moved


def int8_ranges(renderer: Any, face: tuple[torch.Tensor, torch.Tensor]) -> dict[str, list[float]]:
    """The input range of each of ``int8_layers``, over frames of `face` with the mouth open 0-10 px, of the
    same landmarks on an all-black and an all-white photo and of a photo of pure noise (the head reads a conv of
    the photo itself: a black photo took its input 50% past the bundled face's), widened by a tenth each way."""
    generator = renderer.generator
    names = int8_layers(generator)
    seen = {name: [float("inf"), float("-inf")] for name in names}
    lock = threading.Lock()  # the generator's two streams run the hooks at once

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            low, high = (float(v) for v in inputs[0].aminmax())
            with lock:
                seen[name] = [min(seen[name][0], low), max(seen[name][1], high)]
        return hook

    hooks = [generator.get_submodule(name).register_forward_pre_hook(record(name)) for name in names]
    photo, points = face
    try:
        with torch.inference_mode():
            for seed, image in enumerate((photo, photo, photo, -torch.ones_like(photo), torch.ones_like(photo))):
                _, moved = _open_mouths(face, seed=seed)
                renderer.torch_frames(renderer.prepare(image, points.float()), renderer.heatmaps(moved), moved)
            renderer.torch_frames(*example(renderer))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: [low - 0.1 * (high - low), high + 0.1 * (high - low)] for name, (low, high) in seen.items()}


def int8_generator(renderer: Any, checkpoint: Path,
                   face: Callable[[], tuple[torch.Tensor, torch.Tensor] | None]) -> nn.Module | None:
    """A copy of the renderer's generator with ``int8_layers`` in int8 (``Int8Conv2d``), for PyTorch's path on a
    CPU; None where oneDNN's int8 is missing, without a face to calibrate on, or if its frames of that face differ
    from float32's by more than MIN_PSNR. The ranges are measured once per checkpoint and generator code and kept
    in the cache; only then is `face` called, for the real face to measure on (the bundled one, as
    ``example_inputs`` takes it; aligning it costs a second)."""
    if not int8_available() or renderer.device.type != "cpu":
        return None
    # per instruction set class too: oneDNN's int8 kernels differ (VNNI or not), and the check is made on each
    path = cache_dir() / f"{_key(renderer, checkpoint)}-{cpu_class()}.int8-v{INT8_VERSION}.json"
    try:
        ranges = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        ranges = None
    fresh = not _valid_ranges(ranges, int8_layers(renderer.generator))  # a damaged file is measured again
    real = face() if fresh else None
    if fresh and real is None:
        return None
    try:
        if fresh:
            ranges = int8_ranges(renderer, real)
        # the modules copied, their float32 weights shared: the copy adds only the int8 weights
        int8 = copy.deepcopy(renderer.generator, memo={id(t): t for t in (*renderer.generator.parameters(),
                                                                          *renderer.generator.buffers())})
        for name, (low, high) in ranges.items():
            parent, _, leaf = name.rpartition(".")
            setattr(int8.get_submodule(parent), leaf, Int8Conv2d(renderer.generator.get_submodule(name), low, high))
        psnr = int8_psnr(renderer, int8, real) if fresh else MIN_PSNR  # checked when the ranges were measured
    except Exception as exc:  # any failure of the optional path leaves the one that always works
        log.warning("int8 path not used: %s", exc)
        return None
    if psnr < MIN_PSNR:
        log.warning("int8 path not used: its frames differ from float32's (%.1f dB)", psnr)
        return None
    if fresh:  # checked when measured: what is kept passed
        _write_atomically(path, json.dumps(ranges))
    return int8


def _write_atomically(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all; a cache that cannot be written (read-only) only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("Could not keep %s (%s): it will be measured again next time.", path, exc)


def _valid_ranges(ranges: Any, names: list[str]) -> bool:
    """Whether kept `ranges` are one finite (low, high) pair, low < high, for each of `names` and nothing else."""
    return (isinstance(ranges, dict) and set(ranges) == set(names)
            and all(isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) for v in r)
                    and np.isfinite(r).all() and r[0] < r[1] for r in ranges.values()))


def int8_psnr(renderer: Any, int8: nn.Module, face: tuple[torch.Tensor, torch.Tensor]) -> float:
    """PSNR (dB) of the int8 generator's frames against float32's, for a real `face` with the mouth opening."""
    photo, moved = _open_mouths(face, seed=100)
    prepared, heatmaps = renderer.prepare(photo, face[1].float()), renderer.heatmaps(moved)
    with torch.inference_mode():
        return _psnr(renderer.torch_frames(prepared, heatmaps, moved, generator=int8),
                     renderer.torch_frames(prepared, heatmaps, moved))


class OnnxGenerator:
    """The exported generator behind the PyTorch generator's call: same inputs, frames as a torch tensor."""

    def __init__(self, path: Path, like: nn.Module, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.use_identity_heatmaps = like.use_identity_heatmaps
        self.landmark_flow = getattr(like, "landmark_flow", False)

    def __call__(self, photo: torch.Tensor, heatmaps: torch.Tensor, identity_heatmaps: torch.Tensor | None = None,
                 landmarks: torch.Tensor | None = None, identity_landmarks: torch.Tensor | None = None
                 ) -> torch.Tensor:
        given = dict(zip(_INPUTS, (photo, heatmaps, identity_heatmaps, landmarks, identity_landmarks), strict=True))
        feed = {name: np.ascontiguousarray(given[name].detach().cpu().numpy(), np.float32) for name in self.names}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _Traced(nn.Module):
    """The generator with every input positional, as the exporter needs."""

    def __init__(self, generator: nn.Module, names: list[str]):
        super().__init__()
        self.generator, self.names = generator, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.names, inputs, strict=True))
        kwargs = {k: given[k] for k in ("landmarks", "identity_landmarks") if k in given}
        return self.generator(given["photo"], given["heatmaps"], given.get("identity_heatmaps"), **kwargs)


def example(renderer: Any, batch: int = 4, seed: int = 0, face: tuple[torch.Tensor, torch.Tensor] | None = None
            ) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """A prepared identity, target heatmaps and their landmarks (``renderer.generate``'s arguments) for timing and
    checking: a random photo and face-like landmarks, or `face` = (aligned photo (3, 256, 256) in [-1, 1], its
    landmarks (68, 2)), each moved a little."""
    g = torch.Generator().manual_seed(seed)
    size = renderer.image_size
    if face is None:
        photo = torch.rand(3, 256, 256, generator=g) * 2 - 1
        centre = torch.tensor([128.0, 140.0])
        points = centre + (torch.rand(68, 2, generator=g) - 0.5) * torch.tensor([120.0, 140.0])
    else:
        photo, points = face[0].float(), face[1].float()
    prepared = renderer.prepare(photo if size == 256 else torch.nn.functional.interpolate(
        photo[None], size=(size, size), mode="area")[0], points)
    moved = points[None].repeat(batch, 1, 1) + torch.randn(batch, 68, 2, generator=g)
    return prepared, renderer.heatmaps(moved), moved


def example_inputs(renderer: Any, batch: int = 4, seed: int = 0, face: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[tuple, dict]:
    """``example`` as the generator's own arguments (every frame's whole input, the standard layout): what the
    ONNX export traces and what ONNX Runtime is given."""
    prepared, heatmaps, moved = example(renderer, batch, seed, face)
    return renderer.generator_inputs(prepared, heatmaps, moved, memory_format=torch.contiguous_format)


def _key(renderer: Any, checkpoint: Path) -> str:
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "none"
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]
    # the generator's code too: an export traced from older code would run the older graph
    from talkface.models import l2f

    code = hashlib.sha256(Path(l2f.__file__).read_bytes()).hexdigest()[:8]
    return f"l2f-{digest}-{code}-{renderer.image_size}-torch{torch.__version__}-ort{ort}"


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean()) / 4  # frames in [-1, 1]
    return 10 * float(np.log10(1 / max(mse, 1e-20)))


def onnx_generator(renderer: Any, checkpoint: Path, threads: int | None = None) -> OnnxGenerator | None:
    """The renderer's generator in ONNX Runtime, exported once into the cache and checked against PyTorch
    (>= MIN_PSNR on example inputs); None if onnxruntime is missing, the export fails or does not match."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    threads = threads or torch.get_num_threads()
    path = cache_dir() / f"{_key(renderer, checkpoint)}.onnx"
    args, kwargs = example_inputs(renderer)
    names = [n for n, x in zip(_INPUTS, (*args, kwargs.get("landmarks"), kwargs.get("identity_landmarks")),
                               strict=True) if x is not None]
    inputs = tuple(x for x in (*args, kwargs.get("landmarks"), kwargs.get("identity_landmarks")) if x is not None)
    generator = renderer.generator
    exported = path.exists()
    try:
        if not exported:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            traced = _Traced(generator.to(memory_format=torch.contiguous_format), names).eval()
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape checks it folds into constants
                torch.onnx.export(traced, inputs, str(tmp), input_names=names, output_names=["frames"],
                                  opset_version=20, dynamic_axes={n: {0: "batch"} for n in [*names, "frames"]},
                                  dynamo=False)
            generator.to(memory_format=torch.channels_last)
            os.replace(tmp, path)
        onnx = OnnxGenerator(path, generator, threads)
        if exported:  # checked when it was exported (a file that no longer matches would fail to load)
            return onnx
        with torch.inference_mode():
            reference = generator(*args, **kwargs)
        psnr = _psnr(onnx(*args, **kwargs), reference)
    except Exception as exc:  # any failure of the optional path leaves the one that always works
        log.warning("ONNX Runtime path not used: %s", exc)
        generator.to(memory_format=torch.channels_last)
        return None
    if psnr < MIN_PSNR:
        log.warning("ONNX Runtime path not used: its frames differ from PyTorch's (%.1f dB)", psnr)
        path.unlink(missing_ok=True)
        return None
    return onnx


def _seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bf16_psnr(renderer: Any, face: tuple[torch.Tensor, torch.Tensor]) -> float:
    """PSNR (dB) of the generator's frames under bfloat16 autocast against float32, for a real `face` (as
    ``example_inputs`` takes it). A real face, because the error grows with fine detail: on a photo of pure
    noise the frames differ far more than on faces (60 against 66-69 dB, and 23 against 43-49 before the flow and
    warp were kept in float32; docs/benchmarks.md)."""
    prepared, heatmaps, moved = example(renderer, face=face)
    with torch.inference_mode():
        reference = renderer.torch_frames(prepared, heatmaps, moved)
        frames = renderer.torch_frames(prepared, heatmaps, moved, bf16=True)
    return _psnr(frames, reference)


def candidates() -> list[str]:
    """The backends worth timing on this machine: PyTorch always, ONNX Runtime if installed, bfloat16 where the
    CPU computes it natively, int8 where oneDNN's int8 convolutions are. Known without loading anything, so a
    remembered choice costs no export or session."""
    import importlib.util

    return (["torch"] + (["onnx"] if importlib.util.find_spec("onnxruntime") is not None else [])
            + (["bf16"] if native_bf16() else []) + (["int8"] if int8_available() else []))


def _record_key(renderer: Any, checkpoint: Path, names: list[str]) -> str:
    return (f"{_key(renderer, checkpoint)}|{cpu_model()}|{cpu_class()}|threads{torch.get_num_threads()}"
            f"|{'+'.join(names)}|v{CHOICE_VERSION}")


def _records() -> dict[str, Any]:
    record = cache_dir() / "backends.json"
    try:
        return json.loads(record.read_text()) if record.exists() else {}
    except ValueError:
        return {}


class Choice(NamedTuple):
    """What ``choose`` measured on this machine: the fastest backend, every candidate's frames/s at batch 4, and
    the batch the pipeline sends through L2F (4, or 8 where that was faster with the chosen backend)."""

    backend: str
    fps: dict[str, float]
    batch: int = 4


def remembered(renderer: Any, checkpoint: Path, names: list[str]) -> Choice | None:
    """The choice made before on this machine for these candidates, or None if they were never timed here."""
    entry = _records().get(_record_key(renderer, checkpoint, names))
    return Choice(entry["backend"], entry["fps"], int(entry.get("batch", 4))) if entry else None


def _frames_on(renderer: Any, name: str, onnx: OnnxGenerator | None, int8: nn.Module | None
               ) -> Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``renderer.generate`` on backend `name`, chosen or not: PyTorch with the photo's share computed once, ONNX
    Runtime given every frame's whole input."""
    if name == "onnx":
        def frames(prepared: Any, heatmaps: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
            args, kwargs = renderer.generator_inputs(prepared, heatmaps, points, memory_format=torch.contiguous_format)
            return onnx(*args, **kwargs)
        return frames
    return lambda prepared, heatmaps, points: renderer.torch_frames(
        prepared, heatmaps, points, bf16=name == "bf16", generator=int8 if name == "int8" else None)


def _runner(renderer: Any, name: str, batch: int, onnx: OnnxGenerator | None, int8: nn.Module | None
            ) -> Callable[[], torch.Tensor]:
    """A batch of example frames on backend `name`, as the renderer runs it (``_frames_on``)."""
    prepared, heatmaps, moved = example(renderer, batch)
    frames = _frames_on(renderer, name, onnx, int8)
    return lambda: frames(prepared, heatmaps, moved)


def _video(renderer: Any, name: str, batch: int, onnx: OnnxGenerator | None, int8: nn.Module | None
           ) -> Callable[[], None]:
    """16 frames of the bundled-size example drawn and generated `batch` at a time on backend `name`, as the
    pipeline's L2F worker makes them: what differs between batch sizes end to end is as much each batch's fixed
    cost (drawing its heatmaps: ~160 small steps; handing it to the streams) as the generator's rate."""
    prepared, _, moved = example(renderer, 16)
    frames = _frames_on(renderer, name, onnx, int8)

    def run() -> None:
        for start in range(0, 16, batch):
            points = moved[start:start + batch]
            frames(prepared, renderer.heatmaps(points), points)
    return run


def choose(renderer: Any, checkpoint: Path, names: list[str], onnx: OnnxGenerator | None = None,
           face: tuple[torch.Tensor, torch.Tensor] | None = None, int8: nn.Module | None = None) -> Choice:
    """"torch", "onnx", "bf16" or "int8", whichever of `names` (``candidates()``) ran the generator fastest here
    on a batch of 4 (frames/s of each), and the batch for it, measured once per CPU, checkpoint and library
    versions and remembered in the cache (``remembered``). "onnx" runs if `onnx` is given, "bf16" if `face` is
    (a real face, ``bf16_psnr``) and its frames for that face are within MIN_PSNR of float32's, "int8" if `int8`
    is (checked so by ``int8_generator``; its PSNR recorded when `face` is given); a candidate that cannot run is
    left out.

    The batch: batches of 8 ran 10-15% faster end to end than 4 with int8 on the 2-core Intel Xeon, and 11%
    slower with float32 on the 2-core AMD EPYC (docs/benchmarks.md), so it is measured too: 16 frames drawn and
    generated 4 and 8 at a time with the chosen backend (``_video``), twice in turn, 8 kept unless 4 is 3%
    faster. Ties go to 8: what the 16 frames leave out (pasting and encoding a batch while the next one is made)
    favours fewer, bigger batches — on the Xeon ``_video`` saw 8 at 0-10% faster where the whole run was 10-15%,
    and a near tie taken for 4 made the whole photo ~10% slower (docs/benchmarks.md)."""
    key = _record_key(renderer, checkpoint, names)
    known = _records()
    if key in known:
        return remembered(renderer, checkpoint, names)
    timed = [n for n in names if n == "torch" or (n == "onnx" and onnx is not None)
             or (n == "bf16" and face is not None) or (n == "int8" and int8 is not None)]
    entry: dict[str, Any] = {}
    if "bf16" in timed:
        entry["bf16_psnr"] = round(bf16_psnr(renderer, face), 1)
        if entry["bf16_psnr"] < MIN_PSNR:
            log.warning("bfloat16 path not used: its frames differ from float32's (%.1f dB)", entry["bf16_psnr"])
            timed.remove("bf16")
    if "int8" in timed and face is not None:
        entry["int8_psnr"] = round(int8_psnr(renderer, int8, face), 1)
        if entry["int8_psnr"] < MIN_PSNR:
            log.warning("int8 path not used: its frames differ from float32's (%.1f dB)", entry["int8_psnr"])
            timed.remove("int8")
    with torch.inference_mode():
        fps = {name: 4 / _seconds(_runner(renderer, name, 4, onnx, int8)) for name in timed}
        best = max(fps, key=fps.get)
        videos = {b: _video(renderer, best, b, onnx, int8) for b in BATCHES}
        rates = dict.fromkeys(BATCHES, 0.0)
        for _ in range(2):  # interleaved: a spike of the machine's speed does not favour one
            for b in BATCHES:
                rates[b] = max(rates[b], 16 / _seconds(videos[b]))
    batch = 4 if rates[4] >= 1.03 * rates[8] else 8
    known[key] = {"backend": best, "fps": {k: round(v, 1) for k, v in fps.items()}, "batch": batch,
                  "batch_fps": {str(b): round(v, 1) for b, v in rates.items()}, **entry}
    _write_atomically(cache_dir() / "backends.json", json.dumps(known, indent=1))
    return Choice(best, known[key]["fps"], batch)
