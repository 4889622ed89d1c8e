"""Video writing/reading round trip through the bundled ffmpeg, with real speech muxed in."""

import subprocess

import numpy as np
import pytest
import soundfile as sf

from talkface.video import VideoWriter, probe, read_video, write_video

SPEECH = "assets/examples/speech.wav"


def _frames(n: int, size: int = 64) -> np.ndarray:
    t = np.arange(n)[:, None, None]
    ramp = np.linspace(0, 255, size)[None, None, :]
    r = np.broadcast_to((ramp + 8 * t) % 256, (n, size, size))
    return np.stack([r, np.full_like(r, 100), 255 - r], axis=-1).astype(np.uint8)


def test_round_trip_with_audio(tmp_path):
    audio, sr = sf.read(SPEECH, dtype="float32")
    audio = audio[: int(1.16 * sr)]
    out = write_video(tmp_path / "clip.mp4", _frames(29), audio=audio, sample_rate=sr)
    info = probe(out)
    assert info["has_video"] and info["has_audio"]
    assert info["frames"] == 29
    assert info["duration"] == pytest.approx(1.16, abs=0.08)
    frames, fps = read_video(out)
    assert frames.shape == (29, 64, 64, 3) and fps == pytest.approx(25)
    # lossy, but close to what went in
    assert np.abs(frames.astype(int) - _frames(29).astype(int)).mean() < 6


def test_interrupted_writer_leaves_nothing(tmp_path):
    target = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, (64, 64)) as w:
            w.write(_frames(1)[0])
            raise RuntimeError("simulated crash")
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not match"):
        with VideoWriter(tmp_path / "x.mp4", (64, 64)) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))


def test_i420_frames_are_written_as_they_are(tmp_path):
    import cv2

    frames = _frames(10)
    with VideoWriter(tmp_path / "rgb.mp4", (64, 64)) as w:
        w.write_all(frames)
    with VideoWriter(tmp_path / "i420.mp4", (64, 64), preset="superfast", x264="bframes=3:mbtree=1", threads=1) as w:
        for frame in frames:
            w.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420))
    a, b = read_video(tmp_path / "rgb.mp4")[0], read_video(tmp_path / "i420.mp4")[0]
    assert a.shape == b.shape == (10, 64, 64, 3) and np.abs(a.astype(int) - b.astype(int)).mean() < 3
    with pytest.raises(ValueError, match="does not match"):
        with VideoWriter(tmp_path / "x.mp4", (64, 64)) as w:
            w.write(np.zeros((64, 64), np.uint8))  # neither RGB nor I420 of this size


def test_openh264_round_trip(tmp_path):
    """Big frames (a whole photo) go to OpenH264, which the pinned ffmpeg build carries: frames and sound as with
    x264, and no x264 in the stream (x264 signs every stream it writes)."""
    from talkface.video import h264_encoders

    assert "libopenh264" in h264_encoders(), "the pinned imageio-ffmpeg's ffmpeg should have OpenH264"
    audio, sr = sf.read(SPEECH, dtype="float32")
    with VideoWriter(tmp_path / "o.mp4", (64, 64), audio=audio[: int(1.16 * sr)], sample_rate=sr,
                     codec="libopenh264", threads=1) as w:
        w.write_all(_frames(29))
    info = probe(tmp_path / "o.mp4")
    assert info["has_audio"] and info["frames"] == 29 and info["size"] == (64, 64)
    frames, _ = read_video(tmp_path / "o.mp4")
    assert np.abs(frames.astype(int) - _frames(29).astype(int)).mean() < 6
    assert b"x264 - core" not in (tmp_path / "o.mp4").read_bytes()
    write_video(tmp_path / "x.mp4", _frames(3))
    assert b"x264 - core" in (tmp_path / "x.mp4").read_bytes()  # the check above can fail
    with pytest.raises(ValueError, match="codec"):
        VideoWriter(tmp_path / "v.mp4", (64, 64), codec="libvpx")


def test_a_failing_encoder_is_an_error_and_leaves_nothing(tmp_path):
    """ffmpeg can refuse the frames after taking them (OpenH264 above its size limit, H.264 level 5.2's 36864
    macroblocks): imageio-ffmpeg does not look at its exit status, the writer does. The pipeline sends such frames
    to x264 instead."""
    from talkface.pipeline import _large_codec

    frame = np.full((3000, 4000, 3), 100, np.uint8)  # a 12-MP photo at its own size
    with pytest.raises(RuntimeError, match="ffmpeg failed"):
        with VideoWriter(tmp_path / "big.mp4", (4000, 3000), codec="libopenh264", threads=1) as w:
            w.write(frame)
    assert list(tmp_path.iterdir()) == []
    assert _large_codec(1024, 1280) == _large_codec(4096, 2304) == "libopenh264"
    assert _large_codec(4000, 3000) == _large_codec(4096, 2320) == "libx264"
    with VideoWriter(tmp_path / "x264.mp4", (4000, 3000), codec=_large_codec(4000, 3000), preset="ultrafast") as w:
        w.write(frame)
    assert probe(tmp_path / "x264.mp4")["frames"] == 1


def test_the_speech_is_encoded_by_the_fast_aac_coder(tmp_path, monkeypatch):
    """A person's speech goes in with AAC's "fast" coder (half the CPU of ffmpeg's default, no worse at 192 kb/s);
    the corpus's clips (``audio=``) as they always were. The sound still decodes to the speech given."""
    import imageio_ffmpeg

    from talkface.audio import load_speech

    seen = []
    write_frames = imageio_ffmpeg.write_frames

    def spy(*args, **kwargs):
        seen.append(kwargs["output_params"])
        return write_frames(*args, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", spy)
    speech = load_speech(SPEECH)
    with VideoWriter(tmp_path / "s.mp4", (64, 64), soundtrack=speech) as w:
        w.write_all(_frames(50))
    audio, sr = sf.read(SPEECH, dtype="float32")
    write_video(tmp_path / "c.mp4", _frames(5), audio=audio[: sr // 5], sample_rate=sr)
    assert "-aac_coder fast" in " ".join(seen[0]) and "-aac_coder" not in seen[1]
    # the sound, decoded by the same ffmpeg as 16-kHz mono floats
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(tmp_path / "s.mp4"),
                          "-f", "f32le", "-ac", "1", "-ar", str(sr), "-"], capture_output=True, check=True).stdout
    sound = np.frombuffer(raw, np.float32)[: 2 * sr]
    assert np.corrcoef(sound, audio[: len(sound)])[0, 1] > 0.99
