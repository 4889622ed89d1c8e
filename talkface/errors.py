"""Errors a person can read.

Everything a user can get wrong (their photo, their audio, a damaged checkpoint) raises a
subclass of `TalkFaceError` whose message is one plain sentence, so the app and the CLI can show
it as is instead of a traceback.
"""


class TalkFaceError(Exception):
    """Base class: the message is meant for the person using TalkFace."""


class AudioError(TalkFaceError):
    """The speech input cannot be used (unreadable, empty, too short, silent, too long)."""


class FaceError(TalkFaceError):
    """The photo cannot be used (not an image, no face, face too small)."""


class CheckpointError(TalkFaceError):
    """A checkpoint file is missing, damaged, or does not match its config."""
