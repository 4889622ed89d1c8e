"""L2F's generator in ONNX Runtime: the same frames as PyTorch, exported once into the cache, chosen by timing."""

from pathlib import Path

import numpy as np
import pytest

from talkface import backends
from talkface.errors import TalkFaceError
from talkface.pipeline import TalkingFacePipeline

pytest.importorskip("onnxruntime")
REPO = Path(__file__).parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_the_onnx_backend_gives_the_frames_pytorch_gives(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKFACE_CACHE", str(tmp_path / "cache"))
    torch_pipe = TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=tiny_checkpoints, backend="torch")
    onnx_pipe = TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=tiny_checkpoints, backend="onnx")
    assert torch_pipe.renderer.backend == "torch" and onnx_pipe.renderer.backend == "onnx"
    assert len(list((tmp_path / "cache").glob("l2f-*.onnx"))) == 1  # exported once, into the cache
    a = torch_pipe.run(PHOTO, SPEECH, out=tmp_path / "t.mp4", full_frame=False, still=True, preview_frames=12)
    b = onnx_pipe.run(PHOTO, SPEECH, out=tmp_path / "o.mp4", full_frame=False, still=True, preview_frames=12)
    for p, q in zip(a.preview, b.preview, strict=True):
        assert psnr(p.frame, q.frame) >= 40


def test_auto_times_both_once_and_remembers(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKFACE_CACHE", str(tmp_path / "cache"))
    pipe = TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=tiny_checkpoints, backend="auto")
    record = (tmp_path / "cache" / "backends.json").read_text()
    assert pipe.renderer.backend in ("torch", "onnx") and '"fps"' in record
    calls = []
    monkeypatch.setattr(backends, "_seconds", lambda *a, **k: calls.append(1) or 1.0)
    again = TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=tiny_checkpoints, backend="auto")
    assert again.renderer.backend == pipe.renderer.backend and not calls  # the choice was remembered


def test_without_onnxruntime_auto_is_pytorch_and_onnx_says_so(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("TALKFACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backends, "onnx_generator", lambda *a, **k: None)
    import talkface.pipeline as pipeline

    monkeypatch.setattr(pipeline, "onnx_generator", lambda *a, **k: None)
    auto = TalkingFacePipeline.from_pretrained(checkpoint_dir=tiny_checkpoints, backend="auto")
    assert auto.renderer.backend == "torch"
    with pytest.raises(TalkFaceError, match="ONNX Runtime backend is not available"):
        TalkingFacePipeline.from_pretrained(checkpoint_dir=tiny_checkpoints, backend="onnx")
    with pytest.raises(TalkFaceError, match="must be one of auto, torch, onnx"):
        TalkingFacePipeline.from_pretrained(checkpoint_dir=tiny_checkpoints, backend="fast")


def test_cpu_class_reads_the_flags(monkeypatch):
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert backends.cpu_class({"avx2", "avx512f", "avx512_bf16"}) == "avx512-bf16"
    assert backends.cpu_class({"avx2", "avx512f"}) == "avx512"
    assert backends.cpu_class({"avx2"}) == "avx2" and backends.cpu_class(set()) == "other"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # PyTorch held to AVX2: the stand-in for a plain CPU
    assert backends.cpu_class({"avx2", "avx512f"}) == "avx2"

