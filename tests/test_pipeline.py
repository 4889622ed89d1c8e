"""The pipeline end to end on a real photo and real speech, with tiny random-weight checkpoints.

Random weights say nothing about lip sync; what is checked is the plumbing: every video has the speech and
one frame per 1/25 s, A2L's landmarks reach heatmaps and frames unchanged, chunking changes nothing, the
four ablations stay in sync, and a bad checkpoint is named. (That the mouth opens with the speech needs the
trained checkpoints: see bench/ and the model cards.)
"""

import json
import shutil
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch

from talkface.__main__ import main as cli
from talkface.audio import SAMPLE_RATE, mfcc_windows, num_video_frames
from talkface.drawing import mouth_opening_figure
from talkface.errors import CheckpointError, TalkFaceError
from talkface.face import denormalise_landmarks, mouth_opening, normalise_landmarks
from talkface.heatmaps import heatmap_image, render_heatmaps
from talkface.pipeline import (
    ABLATIONS,
    TalkingFacePipeline,
    _one_ahead,
    ablation,
    articulate,
    missing_checkpoints,
    switches,
)
from talkface.renderer import L2FRenderer
from talkface.video import iter_video, probe, read_video

REPO = Path(__file__).parent.parent
PHOTO = REPO / "assets" / "examples" / "face.jpg"
SPEECH = REPO / "assets" / "examples" / "speech.wav"


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints) -> TalkingFacePipeline:
    return TalkingFacePipeline.from_pretrained(a2l="wd_tr", checkpoint_dir=tiny_checkpoints)


@pytest.fixture(scope="module")
def aligned(pipe):
    return pipe.align(PHOTO)


@pytest.fixture(scope="module")
def short_speech() -> tuple[int, np.ndarray]:
    """The first 1.2 s of the example ("Goodbye"), as a Gradio-style (rate, samples) pair."""
    wave, rate = sf.read(SPEECH, dtype="float32")
    return rate, wave[: int(1.2 * rate)]


@pytest.fixture(scope="module")
def full_run(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "out.mp4"
    return pipe.run(PHOTO, SPEECH, panels=True, out=out)


# the whole example


def test_video_has_the_speech_and_one_frame_per_25th_of_a_second(full_run):
    duration = sf.info(SPEECH).duration
    frames = num_video_frames(round(duration * SAMPLE_RATE))
    for path in (full_run.video_path, full_run.panel_video_path):
        info = probe(path)
        assert info["has_video"] and info["has_audio"]
        assert info["frames"] == frames and abs(info["frames"] - duration * 25) <= 1
        assert info["duration"] == pytest.approx(duration, abs=0.1)
    assert full_run.compare_video_path is None
    s = 64  # the tiny generator's resolution (conftest)
    assert full_run.full_frame and full_run.video_size == (512, 512)  # the whole photo (512 x 512) by default
    assert next(iter_video(full_run.video_path)).shape == (512, 512, 3)
    assert next(iter_video(full_run.panel_video_path)).shape == (s + 12, 3 * s, 3)  # + caption strip


def test_result_fields(full_run, pipe):
    t = full_run.num_frames
    assert full_run.landmarks.shape == (t, 68, 2) and full_run.landmarks.dtype == np.float32
    np.testing.assert_allclose(full_run.mouth_opening, mouth_opening(full_run.landmarks))
    assert list(full_run.tracks) == ["wd_tr"] and full_run.a2l == "wd_tr"
    assert full_run.num_faces == 1 and full_run.notes == []
    assert full_run.aligned.image.shape == (256, 256, 3)
    assert {"audio", "face", "a2l", "words", "heatmaps", "l2f", "video"} <= set(full_run.seconds)
    assert 0 < full_run.wall
    words = full_run.words
    assert len(words) == 5 and all(w in pipe.vocabulary for w, _ in words)
    probs = [p for _, p in words]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    # the preview is bounded and spread over the whole clip
    indices = [p.index for p in full_run.preview]
    assert len(indices) == 48 and indices == sorted(set(indices)) and indices[0] == 0 and indices[-1] == t - 1
    assert full_run.preview[0].panel().shape == (76, 192, 3)


class CountingGenerator(torch.nn.Module):
    """Paints frame i of the sequence flat grey at level 16 + 8 i: a codec-proof record of the order."""

    use_identity_heatmaps = True

    def __init__(self):
        super().__init__()
        self.count = 0

    def identity_features(self, identity, identity_heatmaps=None):
        return None

    def forward(self, identity, heatmaps, identity_heatmaps=None, features=None):
        levels = 16 + 8 * torch.arange(self.count, self.count + len(heatmaps), dtype=torch.float32)
        self.count += len(heatmaps)
        return (levels / 127.5 - 1)[:, None, None, None].expand(-1, 3, *identity.shape[-2:])


def test_frames_are_streamed_in_order(pipe, aligned, short_speech, tmp_path, monkeypatch):
    monkeypatch.setattr(pipe.renderer, "generator", CountingGenerator())
    monkeypatch.setattr(pipe.renderer, "_streams", lambda: None)  # it counts calls: one batch, one call
    result = pipe.run(aligned, short_speech, out=tmp_path / "n.mp4", batch_size=7, panels=True, full_frame=False)
    expected = 16 + 8 * np.arange(result.num_frames)
    for path in (result.video_path, result.panel_video_path):
        video, _ = read_video(path)
        s = 64
        frames = video[:, s // 2 :, -s // 2 :]  # a corner of the (last) frame panel, away from its label
        np.testing.assert_allclose(frames.reshape(len(video), -1).mean(1), expected, atol=2)


def test_the_next_batch_is_made_while_this_one_is_written():
    """_one_ahead: results in order, each item's work on another thread; while the caller holds item k, item k+1's
    work has begun and item k+2's has not; `ahead` holds the next back; a failure in the work reaches the caller at
    its item; a caller that stops early leaves the work in flight finished (before its stack's writers close)."""
    started, finished, threads = [], [], set()
    begun, done = ([threading.Event() for _ in range(10)] for _ in range(2))

    def work(item: int) -> int:
        started.append(item)
        threads.add(threading.get_ident())
        begun[item].set()
        try:
            time.sleep(0.02)
            if item == 4:
                raise ValueError("batch 4 failed")
            finished.append(item)
            return item * item
        finally:
            done[item].set()

    def caller(items, ahead=lambda item: True) -> list[tuple[int, int]]:
        started.clear()
        for event in (*begun, *done):
            event.clear()
        seen = []
        with ExitStack() as stack:
            for item, result in _one_ahead(work, items, stack, ahead):
                if item + 1 in items and ahead(item):
                    assert begun[item + 1].wait(10) and done[item + 1].wait(10)  # made while this one is written...
                    time.sleep(0.05)
                assert item + 2 not in started  # ...and no further ahead
                if not ahead(item):
                    time.sleep(0.05)
                    assert item + 1 not in started
                seen.append((item, result))
        return seen

    assert caller(range(4)) == [(i, i * i) for i in range(4)] and threading.get_ident() not in threads
    assert caller(range(4), ahead=lambda item: item != 1) == [(i, i * i) for i in range(4)]
    with pytest.raises(ValueError, match="batch 4 failed"):
        caller(range(3, 8))
    started.clear(), finished.clear()
    with ExitStack() as stack:
        for _ in _one_ahead(work, range(10), stack):
            break
    assert started == finished == [0, 1]  # nothing new after the caller stopped; the one in flight finished
    with ExitStack() as stack:
        assert list(_one_ahead(work, [], stack)) == []


def test_mouth_plot(full_run):
    fig = mouth_opening_figure(full_run)
    wave_ax, mouth_ax = fig.axes
    (line,) = mouth_ax.get_lines()
    assert len(line.get_xdata()) == full_run.num_frames
    np.testing.assert_allclose(line.get_ydata(), full_run.mouth_opening)
    assert len(wave_ax.collections) == 1 and wave_ax.get_xlim()[1] == pytest.approx(full_run.duration)


# A2L -> heatmaps -> frames, unchanged


class RecordingGenerator(torch.nn.Module):
    """Passes everything to the real generator and keeps the heatmaps it was given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.use_identity_heatmaps, self.heatmaps = inner, inner.use_identity_heatmaps, []
        self.landmark_flow, self.landmarks = inner.landmark_flow, []

    def identity_features(self, identity, identity_heatmaps=None):
        return self.inner.identity_features(identity, identity_heatmaps)

    def forward(self, identity, heatmaps, identity_heatmaps=None, **landmarks):
        self.heatmaps.append(heatmaps.clone())
        self.landmarks.append(landmarks["landmarks"].clone())
        return self.inner(identity, heatmaps, identity_heatmaps, **landmarks)


def test_articulation_scales_the_speech_motion(pipe, aligned, short_speech, tmp_path):
    """0 keeps the photo's own landmarks in every frame; 2 moves every point twice as far from them as 1."""
    wave = short_speech[1]
    tracks = {a: pipe.predict_landmarks(aligned, wave, ["wd_tr"], articulation=a)[0]["wd_tr"] for a in (0, 1, 2)}
    np.testing.assert_allclose(tracks[0], np.broadcast_to(aligned.landmarks, tracks[0].shape), atol=1e-3)
    motion = tracks[1] - aligned.landmarks
    assert np.abs(motion).max() > 0.5  # the tiny model does move the face
    np.testing.assert_allclose(tracks[2] - aligned.landmarks, 2 * motion, atol=1e-3)
    with pytest.raises(TalkFaceError, match="Articulation must be between 0 and 2"):
        pipe.run(aligned, short_speech, articulation=2.5, out=tmp_path / "x.mp4")


def test_articulation_never_crosses_the_lips():
    """A photo with an open mouth, a frame that closes it, one that opens it wider: scaled by 3, the closing frame
    stops where the inner lips touch (instead of the lower lip passing above the upper), the opening one scales."""
    ref = torch.zeros(68, 2)
    ref[[67, 66, 65], 1] = 0.2  # an open mouth: lower inner lip 0.2 below the upper (canonical y points down)
    frames = ref.repeat(2, 1, 1)
    frames[0, [67, 66, 65], 1] = 0.1  # half closed
    frames[1, [67, 66, 65], 1] = 0.3  # wider
    out = articulate(frames, ref, 3.0)
    gap = out[:, [67, 66, 65], 1] - out[:, [61, 62, 63], 1]
    torch.testing.assert_close(gap[0], torch.zeros(3))  # closed, not crossed (3x would give -0.1)
    torch.testing.assert_close(gap[1], torch.full((3,), 0.5))  # 0.2 + 3 x 0.1
    torch.testing.assert_close(articulate(frames, ref, 0.5), ref + 0.5 * (frames - ref))  # below 1: plain


def test_a2l_output_reaches_heatmaps_and_frames_unchanged(pipe, aligned, short_speech, tmp_path, monkeypatch):
    recorder = RecordingGenerator(pipe.renderer.generator)
    monkeypatch.setattr(pipe.renderer, "generator", recorder)
    monkeypatch.setattr(pipe.renderer, "_streams", lambda: None)  # it records batches in order: one call each
    result = pipe.run(aligned, short_speech, out=tmp_path / "x.mp4", batch_size=8, still=True, full_frame=False)

    # A2L outside the pipeline, on the same features and reference
    wave = short_speech[1]
    ref, sim = normalise_landmarks(aligned.landmarks)
    with torch.inference_mode():
        ref = torch.from_numpy(ref).float()
        pred = articulate(pipe.a2l_model("wd_tr").predict_sequence(mfcc_windows(wave), ref), ref)
    expected = denormalise_landmarks(pred.double().numpy(), sim)
    np.testing.assert_allclose(result.landmarks, expected, atol=1e-3)

    maps = torch.cat(recorder.heatmaps)
    assert len(maps) == result.num_frames == num_video_frames(len(wave))
    # drawn as train/train_l2f.py draws them: at half the frame's resolution
    torch.testing.assert_close(maps, render_heatmaps(torch.from_numpy(result.landmarks), size=32, sigma=2.0))
    photo = torch.from_numpy(aligned.image).permute(2, 0, 1)[None].float() / 127.5 - 1
    identity = torch.nn.functional.interpolate(photo, size=64, mode="area")
    identity_maps = render_heatmaps(torch.from_numpy(aligned.landmarks)[None], size=32)
    # the landmark flow gets the same landmarks, in pixels of the 64 x 64 frame (centres on integers)
    points = torch.cat(recorder.landmarks)
    torch.testing.assert_close(points, (torch.from_numpy(result.landmarks).float() + 0.5) / 4 - 0.5)
    identity_points = (torch.from_numpy(aligned.landmarks).float()[None] + 0.5) / 4 - 0.5
    for p in result.preview[::6]:
        picture = cv2.resize(heatmap_image(maps[p.index]), (64, 64), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(p.heatmaps, picture)
        with torch.inference_mode():
            frame = recorder.inner(identity, maps[p.index][None], identity_maps, landmarks=points[p.index][None],
                                   identity_landmarks=identity_points)[0]
        frame = ((frame + 1) * 127.5).clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
        assert np.abs(frame.astype(int) - p.frame).max() <= 2


def test_batch_size_does_not_change_the_result(pipe, aligned, short_speech, tmp_path):
    a = pipe.run(aligned, short_speech, out=tmp_path / "a.mp4", batch_size=16, preview_frames=10)
    b = pipe.run(aligned, short_speech, out=tmp_path / "b.mp4", batch_size=5, preview_frames=10)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    for p, q in zip(a.preview, b.preview, strict=True):
        assert p.index == q.index and np.abs(p.frame.astype(int) - q.frame).max() <= 1


@pytest.mark.slow
def test_long_audio_is_generated_in_bounded_batches(pipe, aligned, tmp_path, monkeypatch):
    wave, rate = sf.read(SPEECH, dtype="float32")
    long = np.tile(wave, 3)  # 16.5 s
    batches = []
    real = pipe.renderer.submit
    monkeypatch.setattr(pipe.renderer, "submit", lambda *a, **k: batches.append(len(a[1])) or real(*a, **k))
    monkeypatch.setattr(pipe.renderer, "image_size", 32)  # the generator is fully convolutional: keep it quick
    result = pipe.run(aligned, (rate, long), out=tmp_path / "long.mp4", preview_frames=20,
                      full_frame=False)  # the whole photo would add one rest frame (composite's colour cast)
    assert sum(batches) == result.num_frames == num_video_frames(len(long)) and max(batches) == 4  # the default
    assert len(result.preview) == 20
    assert probe(result.video_path)["frames"] == result.num_frames


def test_renderer_alone_as_the_evaluation_uses_it(tiny_checkpoints, full_run):
    """L2FRenderer: ground-truth-style inputs (identity in [-1, 1], crop-pixel landmarks) -> frames at the
    identity's resolution, the same frames the pipeline made."""
    renderer = L2FRenderer.from_checkpoint(tiny_checkpoints / "l2f")
    identity = torch.from_numpy(full_run.aligned.image).permute(2, 0, 1).float() / 127.5 - 1
    ref = torch.from_numpy(full_run.aligned.landmarks)
    landmarks = torch.from_numpy(full_run.landmarks[[p.index for p in full_run.preview[:3]]])
    frames = renderer(identity, ref, landmarks)
    assert frames.shape == (3, 3, 256, 256) and frames.abs().max() <= 1
    small = torch.nn.functional.interpolate(identity[None], size=64, mode="area")[0]
    frames = renderer(small, ref, landmarks)
    frames = ((frames + 1) * 127.5).clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
    for frame, p in zip(frames, full_run.preview[:3]):
        assert np.abs(frame.astype(int) - p.frame).max() <= 1


# the four ablations


def test_toggles_pick_the_ablation():
    assert [ablation(wd, tr) for wd in (False, True) for tr in (False, True)] == ["baseline", "tr", "wd", "wd_tr"]
    assert all(ablation(*switches(name)) == name for name in ABLATIONS)


def test_compare_gives_four_synced_tracks_and_a_grid(pipe, aligned, short_speech, tmp_path):
    result = pipe.run(aligned, short_speech, a2l="tr", compare=True, out=tmp_path / "c.mp4", full_frame=False)
    assert list(result.tracks) == list(ABLATIONS) and result.a2l == "tr"
    np.testing.assert_array_equal(result.landmarks, result.tracks["tr"])
    tracks = list(result.tracks.values())
    assert all(tr.shape == tracks[0].shape for tr in tracks)
    assert all(not np.allclose(a, b) for i, a in enumerate(tracks) for b in tracks[i + 1 :])
    grid, _ = read_video(result.compare_video_path)
    main, _ = read_video(result.video_path)
    assert grid.shape == (len(main), 128, 128, 3) and len(main) == result.num_frames
    assert probe(result.compare_video_path)["has_audio"]
    # +TR is the bottom-left quadrant; compare below its label
    assert np.abs(grid[:, 64 + 24 :, :64].astype(int) - main[:, 24:]).mean() < 8


def test_heatmaps_drawn_ahead_change_nothing(pipe, aligned, short_speech, tmp_path, monkeypatch):
    """Each batch's heatmaps are drawn while the one before is made (the next track's, with four tracks): the
    same frames as drawn in place, every track, and every batch but the first was drawn ahead."""
    drawn, threads = [], []
    ahead, heatmaps = pipe.renderer.heatmaps_ahead, pipe.renderer.heatmaps
    monkeypatch.setattr(pipe.renderer, "heatmaps_ahead", lambda points: drawn.append(len(points)) or ahead(points))

    def drawing(points):
        if len(points) > 1:  # the frames' (not the photo's own, drawn once: one set of landmarks)
            threads.append(threading.current_thread().name)
        return heatmaps(points)
    monkeypatch.setattr(pipe.renderer, "heatmaps", drawing)
    kwargs = dict(a2l="tr", compare=True, full_frame=False, batch_size=8, preview_frames=30)
    a = pipe.run(aligned, short_speech, out=tmp_path / "a.mp4", **kwargs)
    assert len(drawn) == 4 * -(-a.num_frames // 8) - 1  # every (batch, track) after the first
    if pipe.renderer._streams() is not None:  # two cores or more: all those drawn on the drawing thread, and used
        assert len(threads) == len(drawn) + 1 and threads[0] != threads[1]
        assert set(threads[1:]) == {pipe.renderer._drawer.submit(lambda: threading.current_thread().name).result()}
    monkeypatch.setattr(pipe.renderer, "heatmaps_ahead", lambda points: None)
    b = pipe.run(aligned, short_speech, out=tmp_path / "b.mp4", **kwargs)
    for p, q in zip(a.preview, b.preview, strict=True):
        np.testing.assert_array_equal(p.frame, q.frame)
        np.testing.assert_array_equal(p.heatmaps, q.heatmaps)
    np.testing.assert_array_equal(read_video(a.compare_video_path)[0], read_video(b.compare_video_path)[0])


# word read-out


def test_word_windows(pipe):
    g = torch.Generator().manual_seed(0)
    words, timeline = pipe.read_words(torch.randn(60, 68, 2, generator=g))
    assert [t for t, _, _ in timeline] == [0.0, 0.48, 0.96, 35 / 25]
    assert len(words) == 5 and all(0 < p < 1 for _, p in words)
    _, timeline = pipe.read_words(torch.randn(10, 68, 2, generator=g))
    assert len(timeline) == 1


# checkpoints


def test_bad_checkpoints_are_named(tiny_checkpoints, tmp_path):
    root = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints, root)
    assert missing_checkpoints(root) == []
    with pytest.raises(CheckpointError, match="no A2L model 'best'"):
        TalkingFacePipeline.from_pretrained("best", checkpoint_dir=root)

    (root / "a2l_baseline.json").unlink()
    pipe = TalkingFacePipeline.from_pretrained("wd", checkpoint_dir=root)  # loads without it...
    with pytest.raises(CheckpointError, match=r"a2l_baseline\.json is missing"):
        pipe.run(PHOTO, SPEECH, compare=True, out=tmp_path / "x.mp4")  # ...until a comparison needs it
    assert not (tmp_path / "x.mp4").exists()

    config = json.loads((root / "a2l_tr.json").read_text())
    (root / "a2l_tr.json").write_text(json.dumps({**config, "articulation_gain": "loud"}))
    with pytest.raises(CheckpointError, match=r"a2l_tr\.json records an articulation gain of 'loud'"):
        TalkingFacePipeline.from_pretrained("tr", checkpoint_dir=root)
    (root / "a2l_tr.json").write_text(json.dumps({**config, "articulation_gain": 1.5}))
    assert TalkingFacePipeline.from_pretrained("tr", checkpoint_dir=root).articulation_gain("tr") == 1.5

    (root / "word_detector.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"word_detector\.safetensors is damaged"):
        TalkingFacePipeline.from_pretrained("wd", checkpoint_dir=root)
    (root / "l2f.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"l2f\.safetensors is missing"):
        TalkingFacePipeline.from_pretrained("wd", checkpoint_dir=root)
    assert missing_checkpoints(root) == [root / "l2f.safetensors", root / "a2l_baseline.json"]


def test_each_a2l_model_hears_the_features_it_learnt_from(tiny_checkpoints, aligned, short_speech, tmp_path,
                                                          monkeypatch):
    """A checkpoint recording features["energy"] gets MFCC windows with the loudness coefficient, the others
    without; each kind is computed once per request."""
    import talkface.pipeline as pipeline_module

    root = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints, root)
    config = json.loads((root / "a2l_wd.json").read_text())
    (root / "a2l_wd.json").write_text(json.dumps({**config, "features": {**config["features"], "energy": True}}))
    pipe = TalkingFacePipeline.from_pretrained("baseline", checkpoint_dir=root)
    calls = []
    real = pipeline_module.mfcc_windows
    monkeypatch.setattr(pipeline_module, "mfcc_windows", lambda w, **kw: calls.append(kw) or real(w, **kw))
    wave = short_speech[1].astype(np.float32)
    tracks = pipe.predict_landmarks(aligned, wave, ["baseline", "wd", "tr"])[0]
    assert calls == [{"energy": False}, {"energy": True}]
    alone = pipe.predict_landmarks(aligned, wave, ["wd"])[0]["wd"]
    np.testing.assert_array_equal(tracks["wd"], alone)


# command line


def test_cli_writes_the_videos(tiny_checkpoints, short_speech, tmp_path, capsys):
    audio = tmp_path / "hello.wav"
    sf.write(audio, short_speech[1], short_speech[0])
    out = tmp_path / "out" / "talk.mp4"
    assert cli(["--photo", str(PHOTO), "--audio", str(audio), "--a2l", "baseline", "--out", str(out),
                "--panels", "--checkpoint-dir", str(tiny_checkpoints)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "the lips say" in printed
    assert probe(out)["has_audio"] and probe(out.with_name("talk_panels.mp4"))["has_video"]
    assert not out.with_name("talk_compare.mp4").exists()
    assert probe(out)["size"] == (512, 512) and "(512x512)" in printed  # the whole photo by default
    for flags, size in ((["--crop", "--still"], (64, 64)), (["--max-side", "301"], (300, 300))):
        assert cli(["--photo", str(PHOTO), "--audio", str(audio), "--out", str(out),
                    "--checkpoint-dir", str(tiny_checkpoints), *flags]) == 0
        assert probe(out)["size"] == size, flags


def test_cli_fails_with_a_sentence_and_status_1(tiny_checkpoints, tmp_path):
    not_a_photo = tmp_path / "photo.jpg"
    not_a_photo.write_text("hello")
    run = subprocess.run([sys.executable, "-m", "talkface", "--photo", str(not_a_photo), "--audio", str(SPEECH),
                          "--out", str(tmp_path / "x.mp4"), "--checkpoint-dir", str(tiny_checkpoints)],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert run.returncode == 1
    assert "error: The file photo.jpg is not an image" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x.mp4").exists()


# the whole photo, the sound as recorded, a living head


def _decode(path: Path, rate: int, channels: int) -> np.ndarray:
    from talkface.video import ffmpeg_exe

    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-ac",
                          str(channels), "-ar", str(rate), "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, channels)


def _best_lag(signal: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The shift of `signal` against `reference` (samples, within ±max_lag) and their correlation there."""
    from scipy.signal import correlate

    n = min(len(signal), len(reference)) - 2 * max_lag
    core = reference[max_lag : max_lag + n]
    scores = correlate(signal[: n + 2 * max_lag], core, mode="valid")  # lag -max_lag .. +max_lag
    lag = int(np.argmax(scores)) - max_lag
    shifted = signal[max_lag + lag : max_lag + lag + n]
    return lag, float(np.corrcoef(shifted, core)[0, 1])


def test_the_video_carries_the_speech_as_recorded(pipe, aligned, tmp_path):
    """44.1 kHz stereo in (left: the example speech, right: the same 0.1 s later at half level) -> a 44.1 kHz
    stereo AAC track of at least 128 kb/s, each channel the input's own (correlation >= 0.99), in step with
    the frames (within one frame, 1764 samples); the model still reads 16 kHz mono."""
    import librosa

    wave, rate = sf.read(SPEECH, dtype="float32")
    left = librosa.resample(wave[: 2 * rate], orig_sr=rate, target_sr=44100)
    stereo = np.stack([left, 0.5 * np.roll(left, 4410)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100, subtype="PCM_16")
    result = pipe.run(aligned, path, out=tmp_path / "s.mp4", preview_frames=4, panels=True)
    assert len(result.waveform) == 2 * SAMPLE_RATE  # the model's input: 16 kHz mono
    for video in (result.video_path, result.panel_video_path):
        info = probe(video)
        assert (info["audio_rate"], info["audio_channels"]) == (44100, 2) and info["audio_kbps"] >= 128
        decoded = _decode(video, 44100, 2)
        assert abs(len(decoded) - result.num_frames * 1764) <= 1764  # cut to the frames, not beyond
        for channel in (0, 1):
            lag, corr = _best_lag(decoded[:, channel], stereo[: len(decoded), channel], 1764)
            assert corr >= 0.99 and abs(lag) < 1764, (video.name, channel, lag, corr)


@pytest.mark.parametrize(("rate", "samples", "expected"), [
    (48000, "int16 stereo", (48000, 2)),  # a browser microphone, as Gradio hands it over
    (96000, "float mono", (48000, 1)),  # above AAC's usual rates: resampled to 48 kHz
])
def test_a_recording_given_as_samples_keeps_its_rate_and_channels(pipe, aligned, tmp_path, rate, samples, expected):
    import librosa

    wave, native = sf.read(SPEECH, dtype="float32")
    wave = librosa.resample(wave[: int(1.2 * native)], orig_sr=native, target_sr=rate)
    data = (np.stack([wave, wave[::-1]], 1) * 32767).astype(np.int16) if samples == "int16 stereo" else wave
    result = pipe.run(aligned, (rate, data), out=tmp_path / "m.mp4", preview_frames=2, full_frame=False)
    info = probe(result.video_path)
    assert (info["audio_rate"], info["audio_channels"]) == expected
    decoded = _decode(result.video_path, expected[0], expected[1])
    reference = librosa.resample(wave, orig_sr=rate, target_sr=expected[0])
    lag, corr = _best_lag(decoded[:, 0], reference[: len(decoded)], expected[0] // 25)
    assert corr >= 0.99 and abs(lag) < expected[0] // 25


def test_the_head_blinks_and_moves_unless_still(pipe, aligned, tmp_path):
    wave, rate = sf.read(SPEECH, dtype="float32")
    long = (rate, np.tile(wave, 2))  # 11 s: a few blinks
    alive = pipe.run(aligned, long, out=tmp_path / "a.mp4", preview_frames=2, full_frame=False)
    still = pipe.run(aligned, long, out=tmp_path / "s.mp4", preview_frames=2, full_frame=False, still=True)
    assert not alive.still and still.still

    def lids(track):  # upper to lower eyelid, both eyes, in inter-ocular distances
        return (track[:, [41, 40, 47, 46], 1] - track[:, [37, 38, 43, 44], 1]).mean(1) / np.linalg.norm(
            track[:, 45] - track[:, 36], axis=1)

    closed = lids(alive.landmarks) < 0.5 * np.median(lids(alive.landmarks))
    blinks = np.count_nonzero(np.diff(closed.astype(int)) == 1) + closed[0]
    assert 1 <= blinks <= 6 and lids(still.landmarks).min() > 0.5 * np.median(lids(still.landmarks))
    centre = alive.landmarks[:, 27:36].mean(1) - still.landmarks[:, 27:36].mean(1)  # the nose: head motion
    assert 0.3 < np.abs(centre).max() < 10
    again = pipe.run(aligned, long, out=tmp_path / "b.mp4", preview_frames=2, full_frame=False)
    np.testing.assert_array_equal(again.landmarks, alive.landmarks)  # the same request, the same video


def test_the_video_comes_in_pieces_while_it_is_made(pipe, aligned, tmp_path):
    """on_chunk gets the main video in MPEG-TS pieces as they are encoded: 0.5 s first (something plays early),
    the second as long (a player that waits for more than the first finds it soon), then doubling to 2 s; together
    they are every frame, each with its speech. The example's 137 frames end with 41, a last piece under 2 s."""
    pieces = []
    result = pipe.run(aligned, SPEECH, out=tmp_path / "v.mp4", preview_frames=2, on_chunk=pieces.append,
                      chunk_seconds=0.5)
    frames = [probe(p)["frames"] for p in pieces]
    assert frames == [12, 12, 24, 48, 41] and sum(frames) == result.num_frames
    assert all(p.suffix == ".ts" and probe(p)["has_audio"] for p in pieces)
    assert probe(pieces[0])["size"] == result.video_size


def test_a_long_speech_streams_before_a2l_has_read_all_of_it(pipe, aligned, tmp_path):
    """The first piece of the video is out after A2L's first windows, not its whole run over the speech (which
    grows with the speech: 0.2 s for two minutes on 2 cores), and the finished video is the one made at once."""
    wave, rate = sf.read(SPEECH, dtype="float32")
    long = (rate, np.tile(wave, 4))  # 22 s, 548 frames: 39 windows of 29 frames
    windows: list[int] = []
    hook = pipe.a2l_model(pipe.default_a2l).register_forward_hook(
        lambda module, args, result: windows.append(len(args[0])))
    seen = []
    try:
        streamed = pipe.run(aligned, long, out=tmp_path / "s.mp4", preview_frames=2,
                            on_chunk=lambda path: seen.append(sum(windows)))
    finally:
        hook.remove()
    assert seen[0] == 4 and sum(windows) == 39 and len(seen) > 3
    whole = pipe.run(aligned, long, out=tmp_path / "w.mp4", preview_frames=2)
    np.testing.assert_allclose(streamed.landmarks, whole.landmarks, atol=1e-4)
    assert streamed.words == whole.words and streamed.video_size == whole.video_size


@pytest.mark.parametrize("num_frames", [37, 41, 85, 131])  # 37, 85: seen failing; 41, 131: 5 + 5 + 10 + 20 (+ 40
# + 50) frames, then a single one
def test_no_piece_is_too_short_for_gradio_to_stream(pipe, aligned, tmp_path, num_frames):
    """A last piece of one frame could hold a declared but empty sound track (seen with the bundled models at 256²
    on the example's speech cut to 37 or 137 frames, not with every picture), which Gradio's streaming output
    cannot decode ("Output file #0 does not contain any stream"): the app's request failed. No piece is now
    shorter than 5 frames (0.2 s, three AAC frames of sound), and every one decodes as Gradio decodes it."""
    from gradio.audio_stream_encoder import decode_file_to_pcm

    speech, rate = sf.read(SPEECH, dtype="float32")
    pieces = []

    def keep(path: Path) -> None:  # the app hands each piece to Gradio before the next is written
        pieces.append(shutil.copy(path, tmp_path / f"piece{len(pieces)}.ts"))

    result = pipe.run(aligned, (rate, speech[: int((num_frames + 0.9) * rate / 25)]), out=tmp_path / "v.mp4",
                      preview_frames=2, on_chunk=keep, full_frame=False, still=True)
    frames = [probe(Path(p))["frames"] for p in pieces]
    assert result.num_frames == num_frames and sum(frames) == num_frames and min(frames) >= 5
    for piece in pieces:
        assert len(decode_file_to_pcm(str(piece), 48000, 1)) > 0


def test_a_big_whole_photo_is_encoded_by_openh264_and_streams(pipe, tmp_path):
    """Above 512 x 512 the whole-photo video and its streamed pieces are OpenH264's (half x264's CPU time there,
    talkface.video): the video has every frame at the photo's size and the speech, each piece decodes."""
    from gradio.audio_stream_encoder import decode_file_to_pcm

    photo = cv2.resize(cv2.imread(str(PHOTO)), (720, 900), interpolation=cv2.INTER_CUBIC)[:, :, ::-1]
    speech, rate = sf.read(SPEECH, dtype="float32")
    pieces = []

    def keep(path: Path) -> None:
        pieces.append(shutil.copy(path, tmp_path / f"piece{len(pieces)}.ts"))

    result = pipe.run(np.ascontiguousarray(photo), (rate, speech[: int(1.5 * rate)]), out=tmp_path / "big.mp4",
                      preview_frames=2, on_chunk=keep)
    info = probe(result.video_path)
    assert result.video_size == info["size"] == (720, 900) and info["has_audio"]
    assert info["frames"] == result.num_frames == sum(probe(Path(p))["frames"] for p in pieces)
    for path in (result.video_path, *pieces):
        assert b"x264 - core" not in Path(path).read_bytes()
    for piece in pieces:
        assert len(decode_file_to_pcm(str(piece), 48000, 1)) > 0


def test_the_cli_aligns_the_photo_beside_its_imports(tmp_path):
    """The CLI aligns the photo in a forked process while it imports torch (cold start): in a fresh process, the
    same face as aligned in process; nothing (the pipeline then reports the problem as usual) for a photo without
    a face; and no fork where torch is already loaded (as in this process)."""
    from talkface.__main__ import _align_beside

    if sys.platform != "linux":
        pytest.skip("the CLI aligns beside its imports only where fork is safe (Linux)")
    assert _align_beside(["--photo", str(PHOTO)])() is None  # torch is loaded here: no fork
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 300, 3), 128, np.uint8))
    script = f"""
import sys, numpy as np
from talkface.__main__ import _align_beside
assert _align_beside([])() is None and _align_beside(["--photo"])() is None
assert _align_beside(["--photo={blank}"])() is None  # no face: the child says nothing
early = _align_beside(["--audio", "x.wav", "--photo", {str(PHOTO)!r}])
assert "torch" not in sys.modules and "mediapipe" not in sys.modules
early, seconds = early()
assert 0 < seconds < 60
from talkface.face import align_photo
here = align_photo({str(PHOTO)!r})
assert early is not None and early.num_faces == here.num_faces
for field in ("image", "landmarks", "transform", "photo"):
    np.testing.assert_array_equal(getattr(early, field), getattr(here, field))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_making_a_video_does_without_scipy(tiny_checkpoints, tmp_path):
    """scipy takes 0.3 s to import, a sixteenth of the CLI's cold start: the app's and the CLI's path (the face,
    the speech, A2L, L2F, the blinks, the paste-back, the encoders) never imports it; only the synthetic corpus
    needs it."""
    script = f"""
import sys
from talkface.data import render
from talkface.pipeline import TalkingFacePipeline
blinked = []
blink_frame = render.blink_frame
def counted(*args):
    blinked.append(1)
    return blink_frame(*args)
import talkface.pipeline
talkface.pipeline.blink_frame = counted
pipe = TalkingFacePipeline.from_pretrained(checkpoint_dir={str(tiny_checkpoints)!r}, backend="torch")
pipe.run({str(PHOTO)!r}, {str(SPEECH)!r}, out={str(tmp_path / "v.mp4")!r}, preview_frames=2)
assert blinked, "the example's video has blinks"
print(sorted(m for m in sys.modules if m.split(".")[0] == "scipy"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
