"""Speed: frames/s and real-time factor (RTF, wall time / speech duration) per stage and end to end at
256x256, the generator's FLOPs per frame against the machine's measured matrix-multiply peak, and the
speed-ups that cost nothing in quality, each measured before/after in the same run.

    python bench/speed.py                # the example's 5.5 s of speech, batch sizes 1-32 (minutes on a CPU)
    python bench/speed.py --quick        # 1.5 s of speech, fewer batch sizes: checks that it all runs
    python bench/speed.py --compile      # also torch.compile (tens of seconds of compiling per model)
    python bench/speed.py --device cuda  # default: CUDA when there is one

Stages are those of `TalkingFacePipeline.run`: audio features (read + MFCC windows), A2L (+ the word
detector's read-out), heatmaps, L2F (generator + conversion to uint8 frames), video encoding (H.264 + AAC via
the bundled ffmpeg). Face alignment happens once per photo, so it is given in seconds, not frames/s.

OpenMP's threads spin while they wait for work, and on a CPU shared with anything else (the ffmpeg encoders
of every run, other programs) that spinning can cost more than the work itself. So the stages are measured
twice, each time in a fresh process (OpenMP reads its settings once, at start): as shipped, and with
OMP_WAIT_POLICY=PASSIVE. Then the whole pipeline runs in fresh processes under each setting and change
worth trying, best of two round-robin rounds each.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
import talkface  # noqa: F401, I001 - first: OpenMP's spin-wait set as the CLI and the app have it
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness import (
    PHOTO,
    Row,
    benchmark_checkpoints,
    checkpoint_note,
    default_device,
    fresh_python,
    machine_line,
    matmul_peak,
    report,
    seconds_per_call,
    write_speech,
)
from talkface.audio import FPS, SAMPLE_RATE, mfcc_windows
from talkface.backends import cpu_flags
from talkface.face import CROP_SIZE
from talkface.heatmaps import _SEGMENTS, NUM_CHANNELS, PARTS, render_heatmaps
from talkface.pipeline import TalkingFacePipeline
from talkface.renderer import L2FRenderer, PreparedIdentity
from talkface.video import VideoWriter

SECTION = "speed"


# a candidate for talkface.heatmaps (measured here, proposed in the report)


def render_heatmaps_local(landmarks: torch.Tensor, size: int = 256, sigma: float = 2.0, crop_size: int = 256
                          ) -> torch.Tensor:
    """`talkface.heatmaps.render_heatmaps`, the same maps to about 1e-5, with far less memory traffic.
    (Measured here: it wins only while OpenMP spin-waits; with OMP_WAIT_POLICY=PASSIVE the two are as fast.)

    Two changes. Each part is drawn only inside its points' bounding box over the batch, grown by 6 sigma:
    beyond it every pixel is further than that from every segment, where the ridge is below e^-18 (1.5e-8),
    so it stays 0. And the segments are folded in one at a time into a running minimum of the squared
    distance, whose along/across components are outer sums of a per-column and a per-row term: (N, h, w)
    work per segment, no (N, S, H*W, 2) intermediates to stream through memory.
    """
    lead = landmarks.shape[:-2]
    pts = landmarks.reshape(-1, 68, 2) * (size / crop_size)
    n = pts.shape[0]
    sig = sigma * size / crop_size
    offset = 0.5 - 0.5 * (size / crop_size)  # pixel i's centre, in the scaled crop's coordinates
    coords = torch.arange(size, device=pts.device, dtype=pts.dtype) + offset
    out = pts.new_zeros(n, NUM_CHANNELS, size, size)
    margin = 6 * sig
    for c, (part, (start, end)) in enumerate(zip(PARTS.values(), _SEGMENTS.values())):
        lo = (pts[:, list(part)].amin(dim=(0, 1)) - margin - offset).tolist()
        hi = (pts[:, list(part)].amax(dim=(0, 1)) + margin - offset).tolist()
        x0, y0 = (max(0, math.ceil(v)) for v in lo)
        x1, y1 = (min(size, math.floor(v) + 1) for v in hi)
        if x0 >= x1 or y0 >= y1:
            continue  # the part lies more than 6 sigma outside the picture
        a, ab = pts[:, start], pts[:, end] - pts[:, start]  # (N, S, 2)
        length = ab.norm(dim=-1, keepdim=True)  # (N, S, 1)
        x_axis = torch.tensor([1.0, 0.0], dtype=ab.dtype, device=ab.device)  # for zero-length segments
        unit = torch.where(length > 1e-6, ab / length.clamp_min(1e-6), x_axis)
        dx = coords[x0:x1] - a[..., 0:1]  # (N, S, w)
        dy = coords[y0:y1] - a[..., 1:2]  # (N, S, h)
        best = None
        for s in range(len(start)):
            ux, uy, ls = (unit[:, s, 0, None, None], unit[:, s, 1, None, None], length[:, s, :, None])
            along = dx[:, s, None, :] * ux + dy[:, s, :, None] * uy  # (N, h, w)
            across = dx[:, s, None, :] * uy - dy[:, s, :, None] * ux
            beyond = along - torch.minimum(along.clamp(min=0), ls)
            d2 = across.square_().add_(beyond.square_())
            best = d2 if best is None else torch.minimum(best, d2, out=best)
        out[:, c, y0:y1, x0:x1] = best.mul_(-1 / (2 * sig * sig)).exp_()
    return out.reshape(*lead, NUM_CHANNELS, size, size)


@contextmanager
def candidate_heatmaps() -> Iterator[None]:
    """Every loaded talkface module that draws with `render_heatmaps` draws with the candidate instead."""
    with ExitStack() as stack:
        for name, module in list(sys.modules.items()):
            if name.startswith("talkface") and getattr(module, "render_heatmaps", None) is render_heatmaps:
                stack.enter_context(mock.patch.object(module, "render_heatmaps", render_heatmaps_local))
        yield


# helpers


def frames_uint8(generator: torch.nn.Module, renderer: L2FRenderer, prepared: PreparedIdentity,
                 heatmaps: torch.Tensor, landmarks: torch.Tensor,
                 memory_format: torch.memory_format = torch.channels_last,
                 autocast: torch.dtype | None = None) -> np.ndarray:
    """L2F as the pipeline runs it (its inputs built by ``renderer``, then ``generator``, which may be a variant
    of the renderer's own): a batch, then uint8 H x W x 3 frames on the CPU."""
    args, kwargs = renderer.generator_inputs(prepared, heatmaps, landmarks[: len(heatmaps)], memory_format)
    context = torch.autocast(prepared.photo.device.type, dtype=autocast) if autocast else nullcontext()
    with context:
        out = generator(*args, **kwargs)
    return ((out.float() + 1) * 127.5).clamp(0, 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def low_precision_dtype(device: torch.device) -> torch.dtype | None:
    """float16 on a GPU, bfloat16 on a CPU with native bf16 instructions, else None (emulated: slower)."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_flags() & {"avx512_bf16", "amx_bf16"} else None


class AutocastGenerator(torch.nn.Module):
    """The generator under autocast, handing back float32 so that the conversion to uint8 stays exact."""

    def __init__(self, generator: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.generator, self.dtype = generator, dtype
        self.use_identity_heatmaps = generator.use_identity_heatmaps
        self.landmark_flow = getattr(generator, "landmark_flow", False)

    def forward(self, *args: torch.Tensor | None, **landmarks: torch.Tensor) -> torch.Tensor:
        with torch.autocast(args[0].device.type, dtype=self.dtype):
            return self.generator(*args, **landmarks).float()


def flops(fn) -> int:
    """FLOPs of one call as torch counts them (matrix multiplies and convolutions, not element-wise ops)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def time_shares(seconds: dict[str, float]) -> str:
    """The pipeline's stage times as shares of their sum, largest first (stages under 1% left out)."""
    total = sum(seconds.values())
    return ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])
                     if v >= 0.01 * total)


def frames_differ(a: np.ndarray, b: np.ndarray) -> str:
    """How far two sets of uint8 frames are apart, in words a reader can use."""
    if np.array_equal(a, b):
        return "identical frames"
    diff = a.astype(np.float64) - b
    db = 10 * np.log10(255**2 / np.mean(diff**2))  # over all frames at once: one identical frame is not inf
    return (f"frames differ by {db:.1f} dB PSNR ({(a != b).mean():.2%} of values, "
            f"by at most {np.abs(diff).max():.0f}/255)")


def fps_rtf(frames: int, seconds: float) -> str:
    return f"{frames / seconds:.1f} frames/s, RTF {seconds / (frames / FPS):.2f}"


def moving_frames(image: np.ndarray, count: int) -> list[np.ndarray]:
    """The aligned photo drifting by a pixel or two: something like a talking-face video for the encoder."""
    out = []
    for t in range(count):
        shift = np.float32([[1, 0, 1.5 * math.sin(t / 5)], [0, 1, math.cos(t / 7)]])
        out.append(cv2.warpAffine(image, shift, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE))
    return out


# the benchmark


def stages(config: dict) -> dict:
    """Every stage, the FLOPs and the in-process speed-ups, measured in this process; returns the rows and
    the batch size that was fastest end to end."""
    quick, device, tmp = config["quick"], torch.device(config["device"]), Path(config["work"])
    ckpt, wav = Path(config["checkpoints"]), Path(config["speech"])
    sync = device.type == "cuda"
    batches = [1, 16] if quick else [1, 4, 8, 16, 32]
    min_s = 0.5 if quick else 2.0
    rows: list[list[str]] = []

    def add(figure: str, value: str, target: str = "") -> None:
        rows.append([figure, value, target])

    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=ckpt, device=device)
    add("models", f"{checkpoint_note(ckpt)}; device {device}")

    # stages
    start = time.perf_counter()
    aligned = pipe.align(PHOTO)
    add("face alignment (once per photo)", f"{time.perf_counter() - start:.2f} s (first call: loads models)")
    add("face alignment, warm", f"{seconds_per_call(lambda: pipe.align(PHOTO), min_s, warmup=0):.2f} s")

    waveform = pipe.load_speech(wav).waveform
    n = len(mfcc_windows(waveform))
    duration = len(waveform) / SAMPLE_RATE
    add("speech", f"{duration:.2f} s = {n} frames")
    t = seconds_per_call(lambda: mfcc_windows(torch.from_numpy(pipe.load_speech(wav).waveform).to(device)), min_s)
    add("audio features (read + MFCC windows)", fps_rtf(n, t))

    name = pipe.default_a2l
    t = seconds_per_call(lambda: pipe.predict_landmarks(aligned, waveform, [name]), min_s, sync=sync)
    add(f"A2L ({name}, whole sequence)", fps_rtf(n, t))
    pixels, normalised = pipe.predict_landmarks(aligned, waveform, [name])
    t = seconds_per_call(lambda: pipe.read_words(normalised[name]), min_s, sync=sync)
    add("word detector read-out", fps_rtf(n, t))

    track = torch.from_numpy(pixels[name]).to(device)
    while len(track) < max(batches):
        track = torch.cat([track, track])
    renderer = pipe.renderer
    photo = torch.from_numpy(aligned.image).permute(2, 0, 1).float() / 127.5 - 1
    prepared = renderer.prepare(photo, torch.from_numpy(aligned.landmarks))
    generator = renderer.generator
    heat_fps, l2f_fps = {}, {}
    with torch.inference_mode():
        for b in batches:
            t = seconds_per_call(lambda b=b: renderer.heatmaps(track[:b]), min_s, sync=sync)
            heat_fps[b] = b / t
            maps = renderer.heatmaps(track[:b])
            t = seconds_per_call(lambda m=maps: frames_uint8(generator, renderer, prepared, m, track), min_s)
            l2f_fps[b] = b / t
    add(f"heatmaps ({NUM_CHANNELS} x {maps.shape[-1]}^2), frames/s by batch",
        ", ".join(f"b{b}: {v:.1f}" for b, v in heat_fps.items()))
    add("L2F generator + uint8 frames, frames/s by batch",
        ", ".join(f"b{b}: {v:.1f}" for b, v in l2f_fps.items()), "25 frames/s")

    frames = moving_frames(aligned.image, n)

    def encode() -> None:
        with VideoWriter(tmp / "encode.mp4", (CROP_SIZE, CROP_SIZE), FPS, waveform, SAMPLE_RATE) as writer:
            writer.write_all(frames)

    add("video encode (H.264 + AAC, 256x256)", fps_rtf(n, seconds_per_call(encode, min_s, warmup=0)))

    # end to end, from the photo and the speech file to the finished mp4
    e2e: dict[int, float] = {}
    breakdown = {}
    for b in ([16] if quick else [4, 8, 16, 32]):  # batch 1 is in the L2F sweep; end to end it takes minutes
        start = time.perf_counter()
        result = pipe.run(PHOTO, wav, out=tmp / f"e2e_{b}.mp4", batch_size=b)
        e2e[b] = time.perf_counter() - start
        breakdown[b] = result.seconds
    best = min(e2e, key=e2e.get)
    add("end to end (photo + speech file -> mp4), by batch",
        ", ".join(f"b{b}: {fps_rtf(n, s)}" for b, s in e2e.items()), "RTF <= 1.0 (>= 25 frames/s)")
    add("where the time goes (end to end, fastest batch)", f"b{best}: {time_shares(breakdown[best])}")
    start = time.perf_counter()
    pipe.run(PHOTO, wav, out=tmp / "e2e_panels.mp4", batch_size=best, panels=True)
    add("end to end as the app runs it (+ panel video, fastest batch)",
        f"b{best}: {fps_rtf(n, time.perf_counter() - start)}")

    # the limit: FLOPs per frame against the measured matrix-multiply peak
    one = renderer.heatmaps(track[:1])
    with torch.inference_mode():
        one_args, one_kwargs = renderer.generator_inputs(prepared, one, track[:1])
        g_flops = flops(lambda: generator(*one_args, **one_kwargs))
        a_flops = flops(lambda: pipe.predict_landmarks(aligned, waveform, [name])) / n
    peak = matmul_peak(device, min_seconds=min_s)
    l2f_best = max(l2f_fps.values())
    add("generator FLOPs per frame (convs, FlopCounterMode)", f"{g_flops / 1e9:.2f} GFLOP")
    add("A2L FLOPs per frame", f"{a_flops / 1e6:.2f} MFLOP")
    add(f"measured fp32 matmul peak ({device.type})", f"{peak / 1e9:.0f} GFLOP/s")
    add("generator's share of that peak (best batch)", f"{l2f_best * g_flops / peak:.0%} "
        f"({l2f_best * g_flops / 1e9:.0f} GFLOP/s)")
    add("generator frames/s if it ran at the matmul peak", f"{peak / g_flops:.1f}", "25 frames/s")
    low_precision = low_precision_dtype(device)
    if low_precision:
        low_peak = matmul_peak(device, low_precision, min_seconds=min_s)
        add(f"measured {str(low_precision).removeprefix('torch.')} matmul peak ({device.type})",
            f"{low_peak / 1e9:.0f} GFLOP/s")

    # speed-ups: before/after in this run
    b = 16
    maps = renderer.heatmaps(track[:b])
    with torch.inference_mode():
        reference = frames_uint8(generator, renderer, prepared, maps, track)
    plain = copy.deepcopy(generator).to(memory_format=torch.contiguous_format)

    def l2f_rate(model, mode=torch.inference_mode, **kwargs) -> float:
        with mode():
            t = seconds_per_call(lambda: frames_uint8(model, renderer, prepared, maps, track, **kwargs), min_s)
        return b / t

    contiguous = l2f_rate(plain, memory_format=torch.contiguous_format)
    channels_last = l2f_rate(generator)
    add(f"L2F b{b}: contiguous -> channels_last (the pipeline's)",
        f"{contiguous:.1f} -> {channels_last:.1f} frames/s")
    add(f"L2F b{b}: no_grad -> inference_mode (the pipeline's)",
        f"{l2f_rate(generator, torch.no_grad):.1f} -> {l2f_rate(generator):.1f} frames/s")
    if low_precision:
        with torch.inference_mode():
            low = frames_uint8(generator, renderer, prepared, maps, track, autocast=low_precision)
        add(f"L2F b{b}: fp32 -> {str(low_precision).removeprefix('torch.')} autocast",
            f"{channels_last:.1f} -> {l2f_rate(generator, autocast=low_precision):.1f} frames/s; "
            f"{frames_differ(low, reference)}")

    with torch.inference_mode():
        lib = b / seconds_per_call(lambda: renderer.heatmaps(track[:b]), min_s, sync=sync)
        with candidate_heatmaps():
            local = renderer.heatmaps(track[:b])
            fast = b / seconds_per_call(lambda: renderer.heatmaps(track[:b]), min_s, sync=sync)
    add(f"heatmaps b{b}: library -> bounding box + running minimum (bench candidate)",
        f"{lib:.1f} -> {fast:.1f} frames/s; max difference {(local - maps).abs().max().item():.1e}")
    if config["compile"]:
        compiled = torch.compile(renderer.heatmaps, dynamic=False)
        start = time.perf_counter()
        diff = (compiled(track[:b]) - maps).abs().max().item()
        took = time.perf_counter() - start
        rate = b / seconds_per_call(lambda: compiled(track[:b]), min_s, sync=sync)
        add(f"heatmaps b{b}: library -> torch.compile",
            f"{lib:.1f} -> {rate:.1f} frames/s after {took:.0f} s of compiling; max difference {diff:.1e}")
        compiled_g = torch.compile(copy.deepcopy(generator), dynamic=False)
        start = time.perf_counter()
        with torch.inference_mode():
            out = frames_uint8(compiled_g, renderer, prepared, maps, track)
        took = time.perf_counter() - start
        add(f"L2F b{b}: channels_last -> torch.compile", f"{channels_last:.1f} -> {l2f_rate(compiled_g):.1f} "
            f"frames/s after {took:.0f} s of compiling; {frames_differ(out, reference)}")
    return {"rows": rows, "best": best, "frames": n}


SETTINGS = (("as shipped", {}), ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}))


def run(quick: bool = False, device: torch.device | None = None, compile_models: bool = False,
        work: Path | None = None) -> list[Row]:
    """The stages twice, each time in a fresh process: as shipped and with OpenMP's threads sleeping
    instead of spinning while they wait; then the end-to-end matrix of settings and changes."""
    device = device or default_device()
    tmp = Path(work or tempfile.mkdtemp(prefix="talkface-bench-"))
    ckpt = benchmark_checkpoints(tmp / "checkpoints")
    wav = write_speech(tmp / "speech.wav", 1.5 if quick else None)  # None: the whole 5.5 s example
    config = {"quick": quick, "device": str(device), "work": str(tmp), "checkpoints": str(ckpt),
              "speech": str(wav), "compile": compile_models}
    results = []
    for label, env in SETTINGS:
        print(f"  stages, fresh process, {label}...", flush=True)
        results.append(fresh_python([__file__, "--stages-child", json.dumps(config)], env, timeout=3600)[0])
    rows = []
    for (figure, shipped, target), (_, passive, _) in zip(*(r["rows"] for r in results)):
        both = f"{SETTINGS[0][0]}: {shipped} — {SETTINGS[1][0]}: {passive}"
        value = shipped if shipped == passive else both
        rows.append(Row(SECTION, figure, value, target))
        print(f"  {figure}: {value}", flush=True)
    rows += end_to_end_matrix(ckpt, wav, results[0]["frames"], device, results[1]["best"], tmp)
    return rows


def e2e_child(config: dict) -> dict:
    """One end-to-end run in this (fresh) process, with the changes `config` asks for."""
    start = time.perf_counter()
    pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir=config["checkpoints"], device=config["device"])
    loaded = time.perf_counter() - start
    with ExitStack() as stack:
        if config["heatmaps"] == "candidate":
            stack.enter_context(candidate_heatmaps())
        if config["autocast"]:
            low = AutocastGenerator(pipe.renderer.generator, getattr(torch, config["autocast"]))
            stack.enter_context(mock.patch.object(pipe.renderer, "generator", low))
        start = time.perf_counter()
        result = pipe.run(PHOTO, config["speech"], out=config["out"], batch_size=config["batch"])
        took = time.perf_counter() - start
    np.save(config["previews"], np.stack([p.frame for p in result.preview]))
    return {"load_s": loaded, "run_s": took, "frames": result.num_frames, "seconds": result.seconds,
            "threads": torch.get_num_threads()}


def end_to_end_matrix(checkpoints: Path, wav: Path, n: int, device: torch.device, batch: int, tmp: Path,
                      rounds: int = 2) -> list[Row]:
    """The pipeline end to end, each setting in a fresh process: as shipped, the OpenMP wait policy and
    thread count, glibc's mmap threshold, then the bench's candidate heatmaps or low-precision L2F."""
    low = low_precision_dtype(device)
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    variants = [
        ("as shipped (OpenMP defaults)", {}, {}),
        ("OMP_WAIT_POLICY=PASSIVE", passive, {}),
        ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}, {}),
        ("PASSIVE + MALLOC_MMAP_THRESHOLD_=131072", {**passive, "MALLOC_MMAP_THRESHOLD_": "131072"}, {}),
        ("PASSIVE + candidate heatmaps", passive, {"heatmaps": "candidate"}),
    ]
    if low:
        name = str(low).removeprefix("torch.")
        variants.append((f"PASSIVE + {name} L2F", passive, {"autocast": name}))
    best: dict[int, tuple[dict, float]] = {}
    common = {"checkpoints": str(checkpoints), "device": str(device), "speech": str(wav), "batch": batch,
              "heatmaps": "library", "autocast": None}
    for _ in range(rounds):  # round-robin, best of the rounds: a neighbour's burst hits a run, not a setting
        for i, (_, env, changes) in enumerate(variants):
            config = {**common, "out": str(tmp / f"matrix_{i}.mp4"), "previews": str(tmp / f"matrix_{i}.npy"),
                      **changes}
            r, wall = fresh_python([__file__, "--e2e-child", json.dumps(config)], env)
            if i not in best or r["run_s"] < best[i][0]["run_s"]:
                best[i] = (r, wall)
    rows = []
    first = np.load(tmp / "matrix_0.npy")
    for i, (label, _, _) in enumerate(variants):
        r, wall = best[i]
        same = "" if i == 0 else f"; {frames_differ(np.load(tmp / f'matrix_{i}.npy'), first)} from as shipped"
        value = (f"{fps_rtf(n, r['run_s'])} ({r['threads']} threads; {time_shares(r['seconds'])}); "
                 f"process start to video {wall:.1f} s{same}")
        rows.append(Row(SECTION, f"end to end b{batch}, fresh process, best of {rounds}: {label}", value,
                        "RTF <= 1.0"))
        print(f"  {rows[-1].figure}: {value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short audio, two batch sizes")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    parser.add_argument("--e2e-child", help=argparse.SUPPRESS)
    parser.add_argument("--stages-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.e2e_child:
        print(json.dumps(e2e_child(json.loads(args.e2e_child))))
        return
    if args.stages_child:
        print(json.dumps(stages(json.loads(args.stages_child))))
        return
    device = torch.device(args.device) if args.device else default_device()
    header = machine_line(device)
    print(header, flush=True)
    rows = run(args.quick, device, args.compile)
    report("Speed", rows, header=header)


if __name__ == "__main__":
    main()
