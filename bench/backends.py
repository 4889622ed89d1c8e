"""L2F's backends before/after in one run: PyTorch, ONNX Runtime, PyTorch in bfloat16 (on CPUs that compute it
natively) and with int8 convolutions (x86): frames/s, end to end, and each one's frames against PyTorch's float32
frames.

    python bench/backends.py                      # this CPU as it is
    python bench/backends.py --real ../shared/real_av/grid   # also PSNR on real clips' first frames
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python bench/backends.py   # PyTorch held to AVX2
    python bench/backends.py --wav2lip ~/src/Wav2Lip   # also Wav2Lip's generator, from a checkout of its repo

The CPU's class and flags head the table. With PyTorch held to AVX2 on an AVX-512 machine, only PyTorch's
figures stand in for a plain CPU: ONNX Runtime has no such switch and still uses AVX-512 there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
import talkface  # noqa: F401, I001 - first: OpenMP's spin-wait set as the CLI and the app have it
import torch

from bench.harness import PHOTO, SPEECH, Row, machine_line, report

SECTION = "backends"


def example_batch(pipe, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of L2F's inputs from the bundled photo: its landmarks, the mouth a little more open in each frame,
    and their heatmaps."""
    points = torch.from_numpy(pipe.align(PHOTO).landmarks)[None].repeat(batch, 1, 1).float()
    points[:, 48:68, 1] += torch.linspace(0, 6, batch)[:, None]
    return points, pipe.renderer.heatmaps(points)


def frames_per_second(pipe, prepared, batch: int, repeats: int = 5) -> float:
    renderer = pipe.renderer
    points, heat = example_batch(pipe, batch)
    with torch.inference_mode():
        renderer.generate(prepared, heat, points)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            renderer.generate(prepared, heat, points)
            best = min(best, time.perf_counter() - start)
    return batch / best


def sustained(pipe, prepared, batch: int = 4, batches: int = 15) -> tuple[float, float]:
    """Mean frames/s over `batches` batches in a row, as a video runs them (the best of a few hides what a layer's
    fresh memory costs), and the page faults a batch takes (talkface's malloc settings: none once warm)."""
    import resource

    renderer = pipe.renderer
    points, heat = example_batch(pipe, batch)
    with torch.inference_mode():
        for _ in range(3):
            renderer.generate(prepared, heat, points)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(batches):
            renderer.generate(prepared, heat, points)
        took = time.perf_counter() - start
    return batch * batches / took, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / batches


def wav2lip_frames_per_second(root: Path, batch: int, bf16: bool = False, repeats: int = 5) -> float:
    """Wav2Lip's generator (models.Wav2Lip of a checkout at `root`; random weights: only its speed is measured)
    on a batch of its own inputs (mel windows 1x80x16, masked face + reference 6x96x96), as its inference runs it."""
    sys.path.insert(0, str(root))
    try:
        from models import Wav2Lip
    finally:
        sys.path.remove(str(root))
    model = Wav2Lip().eval()
    mel, faces = torch.randn(batch, 1, 80, 16), torch.rand(batch, 6, 96, 96)

    def once() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(mel, faces)

    with torch.inference_mode():
        once()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            once()
            best = min(best, time.perf_counter() - start)
    return batch / best


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def run(real: Path | None = None, wav2lip: Path | None = None) -> list[Row]:
    from talkface.backends import cpu_class, cpu_flags, int8_available, native_bf16
    from talkface.pipeline import TalkingFacePipeline
    from talkface.video import read_video

    best_l2f = 0.0
    rows = [Row(SECTION, "CPU class (the flags that pick the kernels)",
                f"{cpu_class()}; {' '.join(sorted(f for f in cpu_flags() if f.startswith(('avx', 'amx', 'fma'))))}")]
    work = Path(tempfile.mkdtemp(prefix="talkface-bench-"))
    names = ("torch", "onnx") + (("bf16",) if native_bf16() else ()) + (("int8",) if int8_available() else ())
    pipes = {name: TalkingFacePipeline.from_pretrained(backend=name) for name in names}
    rows.append(Row(SECTION, "backend the pipeline picks here (auto)",
                    TalkingFacePipeline.from_pretrained(backend="auto").renderer.backend))
    aligned = pipes["torch"].align(PHOTO)
    photo = torch.from_numpy(aligned.image).permute(2, 0, 1).float() / 127.5 - 1
    # PyTorch held to AVX2 on a bigger CPU (a stand-in for a plain one): ONNX Runtime is not held, so not compared
    stand_in = cpu_class() == "avx2" and "avx512f" in cpu_flags()
    for name, pipe in pipes.items():
        prepared = pipe.renderer.prepare(photo, torch.from_numpy(aligned.landmarks))
        fps = {b: frames_per_second(pipe, prepared, b) for b in (1, 4, 8)}
        rows.append(Row(SECTION, f"L2F generator, {name}, frames/s by batch",
                        ", ".join(f"b{b}: {v:.1f}" for b, v in fps.items()), ">= 2x Wav2Lip at 96²"))
        if name != "onnx" or not stand_in:
            best_l2f = max(best_l2f, fps[4])
        rate, faults = sustained(pipe, prepared)
        rows.append(Row(SECTION, f"L2F generator, {name}, 15 batches of 4 in a row: mean frames/s, page faults a "
                                 "batch", f"{rate:.1f}, {faults:.0f}"))
        if name != "onnx":  # the same without the streams (one batch on all cores), for a before/after
            streams, pipe.renderer._streams = pipe.renderer._streams, lambda: None
            one = {b: frames_per_second(pipe, prepared, b) for b in (4, 8)}
            pipe.renderer._streams = streams
            rows.append(Row(SECTION, f"L2F generator, {name}, one batch on all cores (no streams), frames/s",
                            ", ".join(f"b{b}: {v:.1f}" for b, v in one.items())))
    if wav2lip is not None:
        for bf16 in (False, True) if "bf16" in names else (False,):
            fps = {b: wav2lip_frames_per_second(wav2lip, b, bf16) for b in (1, 4, 8)}
            rows.append(Row(SECTION, f"Wav2Lip's generator at 96², {'bf16' if bf16 else 'fp32, as it ships'}, "
                                     "frames/s by batch", ", ".join(f"b{b}: {v:.1f}" for b, v in fps.items())))
            if not bf16:
                rows.append(Row(SECTION, "L2F (fastest path here" + (", PyTorch's" if stand_in else "")
                                + ") / Wav2Lip (as it ships), batch 4",
                                f"{best_l2f / fps[4]:.2f}x", ">= 2x"))
    results = {}
    for name, pipe in pipes.items():
        pipe.run(PHOTO, SPEECH, out=work / "warm.mp4", full_frame=False, still=True)
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            result = pipe.run(PHOTO, SPEECH, out=work / f"{name}.mp4", full_frame=False, still=True)
            best = min(best, time.perf_counter() - start)
        results[name] = result
        rows.append(Row(SECTION, f"end to end, face crop, {name}", f"{best:.2f} s for {result.duration:.2f} s: "
                                 f"RTF {best / result.duration:.2f}", "RTF <= 1 (AVX2), <= 0.5 (AVX-512)"))
        whole = pipe.run(PHOTO, SPEECH, out=work / f"{name}_whole.mp4")
        rows.append(Row(SECTION, f"end to end, whole photo + living head, {name}",
                        f"RTF {whole.wall / whole.duration:.2f}"))
    a, _ = read_video(results["torch"].video_path)
    for name in names[1:]:
        b, _ = read_video(results[name].video_path)
        rows.append(Row(SECTION, f"{name} vs torch frames, bundled example (after H.264)", f"{psnr(a, b):.1f} dB",
                        ">= 40 dB"))
        raw = [psnr(p.frame, q.frame) for p, q in zip(results["torch"].preview, results[name].preview, strict=True)]
        rows.append(Row(SECTION, f"{name} vs torch frames, bundled example (raw, worst preview frame)",
                        f"{min(raw):.1f} dB", ">= 40 dB"))
    if real is not None:
        for clip in sorted(Path(real).glob("*.mpg")) + sorted(Path(real).glob("*.mp4")):
            frames, _ = read_video(clip)
            out = {name: pipe.run(frames[0], str(clip), out=work / f"{clip.stem}_{name}.mp4", full_frame=False,
                                  still=True, preview_frames=20) for name, pipe in pipes.items()}
            for name in names[1:]:
                worst = min(psnr(p.frame, q.frame)
                            for p, q in zip(out["torch"].preview, out[name].preview, strict=True))
                rows.append(Row(SECTION, f"{name} vs torch frames, {clip.name} (raw, worst of 20)", f"{worst:.1f} dB",
                                ">= 40 dB"))
    for row in rows:
        print(f"  {row.figure}: {row.value}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="a folder of real clips (GRID .mpg, .mp4) for the PSNR rows")
    parser.add_argument("--wav2lip", type=Path, help="a checkout of github.com/Rudrabha/Wav2Lip: time its generator")
    args = parser.parse_args(argv)
    header = machine_line()
    print(header, flush=True)
    report("Backends", run(args.real, args.wav2lip), header=header)


if __name__ == "__main__":
    main()
