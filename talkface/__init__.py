"""TalkFace: talking-face generation via semantic and temporal synchronous landmarks (Zheng et al., ICPR 2020)."""

import os

# Idle OpenMP threads busy-wait by default; with ffmpeg encoders and other processes on a small CPU that
# spinning made the pipeline 4x slower end to end (bench/speed.py). Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from talkface.errors import AudioError, CheckpointError, FaceError, TalkFaceError

__all__ = ["AudioError", "CheckpointError", "FaceError", "TalkFaceError", "TalkingFacePipeline"]


def __getattr__(name: str):
    """``from talkface import TalkingFacePipeline`` without importing torch for every ``talkface.*`` import."""
    if name == "TalkingFacePipeline":
        from talkface.pipeline import TalkingFacePipeline

        return TalkingFacePipeline
    raise AttributeError(f"module 'talkface' has no attribute {name!r}")
__version__ = "0.1.0"
