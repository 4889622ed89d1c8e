"""TalkFace: talking-face generation via semantic and temporal synchronous landmarks (Zheng et al., ICPR 2020)."""

from talkface.errors import AudioError, CheckpointError, FaceError, TalkFaceError

__all__ = ["AudioError", "CheckpointError", "FaceError", "TalkFaceError"]
__version__ = "0.1.0"
