"""talkface.face on real photos: a portrait, a group photo, no face, a tiny face, awkward files."""

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest
import skimage.data
import torch

from talkface import face
from talkface.errors import FaceError

SOLVAY = Path("/usr/share/visp-images-data/ViSP-images/Solvay/Solvay_conference_1927_Version2_1280x881.png")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """The astronaut, cut to 512x420 so that a wrong rotation changes the shape."""
    return np.ascontiguousarray(skimage.data.astronaut()[:, 40:460])


@pytest.fixture(scope="module")
def aligned(portrait) -> face.AlignedFace:
    return face.align_face(portrait)


def _mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b, axis=-1).mean())


# alignment of a portrait


def test_portrait_is_aligned_like_an_lrw_frame(aligned):
    lm = aligned.landmarks
    assert aligned.image.shape == (256, 256, 3) and aligned.image.dtype == np.uint8
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    assert aligned.num_faces == 1
    assert (lm > 0).all() and (lm < 256).all()
    eyes_y = lm[face.RIGHT_EYE + face.LEFT_EYE, 1].mean()
    assert lm[face.RIGHT_BROW + face.LEFT_BROW, 1].mean() < eyes_y < lm[33, 1] < lm[face.MOUTH, 1].mean() < lm[8, 1]
    assert lm[face.RIGHT_EYE, 0].mean() < lm[30, 0] < lm[face.LEFT_EYE, 0].mean()  # person's right on the left
    anchors = face._anchors(lm)
    template = np.array(list(face.TEMPLATE.values()))
    assert np.abs(anchors - template).max() < 6
    face_width = lm[16, 0] - lm[0, 0]
    assert 0.45 * 256 < face_width < 0.55 * 256


def test_transform_maps_the_photo_to_the_crop(portrait, aligned):
    """Data preparation warps every video frame with the reference frame's transform."""
    crop = cv2.warpAffine(portrait, aligned.transform, (256, 256), borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(crop.astype(int) - aligned.image).mean() < 1
    eyes = aligned.box.keypoints[:2] @ aligned.transform[:, :2].T + aligned.transform[:, 2]
    assert np.abs(eyes - face._anchors(aligned.landmarks)[:2]).max() < 8


def test_other_crop_sizes_scale_the_landmarks(portrait, aligned):
    small = face.align_face(portrait, size=128)
    assert small.image.shape == (128, 128, 3)
    assert _mean_distance(small.landmarks * 2, aligned.landmarks) < 2.5


def test_detect_landmarks_has_sub_pixel_precision(aligned):
    shift = np.float32([[1, 0, 0.5], [0, 1, 0.5]])
    moved = cv2.warpAffine(aligned.image, shift, (256, 256), borderMode=cv2.BORDER_REPLICATE)
    box = tuple(v + 0.5 for v in face.TEMPLATE_BOX)
    delta = face.detect_landmarks(moved, box) - face.detect_landmarks(aligned.image)
    assert np.allclose(delta.mean(0), 0.5, atol=0.2)


def test_landmarks_of_the_mirrored_crop_are_mirrored(aligned):
    """Pixel centres are handled right: a half-pixel slip would show as a 1 px gap here."""
    x0, y0, x1, y1 = face.TEMPLATE_BOX
    flipped = face.detect_landmarks(aligned.image[:, ::-1], (255 - x1, y0, 255 - x0, y1))
    back = flipped[face.MIRROR] * [-1, 1] + [255, 0]
    delta = back - face.detect_landmarks(aligned.image)
    assert np.abs(delta.mean(0)).max() < 0.3 and np.abs(delta).mean() < 1


def test_threads_share_the_models(portrait, aligned):
    results = [None] * 4

    def work(i):
        results[i] = face.align_face(portrait).landmarks

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for lm in results:
        np.testing.assert_allclose(lm, aligned.landmarks)


# group photo, no face, tiny face


def test_group_photo_finds_many_faces_and_aligns_the_largest():
    assert SOLVAY.exists(), "the Solvay photo comes with the Debian package visp-images-data (bash run.sh test)"
    image = face.load_image(SOLVAY)
    faces = face.detect_faces(image)
    assert 24 <= len(faces) <= 29  # 29 people; 27 are found
    areas = [f.width * f.height for f in faces]
    assert areas == sorted(areas, reverse=True)
    result = face.align_face(image)
    assert result.num_faces >= 24
    assert face._iou(result.box, faces[0]) > 0.8
    lm = result.landmarks
    assert lm[face.RIGHT_EYE + face.LEFT_EYE, 1].mean() < lm[33, 1] < lm[face.MOUTH, 1].mean() < lm[8, 1]


def test_no_face():
    with pytest.raises(FaceError, match="No face was found"):
        face.align_face(skimage.data.coffee())
    assert face.detect_faces(skimage.data.coffee()) == []


def test_tiny_face_is_too_small():
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[100:260, 200:360] = cv2.resize(skimage.data.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    with pytest.raises(FaceError, match=r"only 3\d pixels wide .* at least 40"):
        face.align_face(canvas)
    assert face.align_face(canvas, min_face=20).landmarks.shape == (68, 2)


# awkward files


def _write(tmp_path: Path, name: str, image: PIL.Image.Image, **kwargs) -> Path:
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_exif_rotated_photo_is_turned_upright(tmp_path, portrait, aligned):
    upright = PIL.Image.fromarray(portrait)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write portraits
    path = _write(tmp_path, "phone.jpg", upright.transpose(PIL.Image.Transpose.ROTATE_90), exif=exif, quality=95)
    image = face.load_image(path)
    assert image.shape == portrait.shape
    assert np.abs(image.astype(int) - portrait).mean() < 4
    assert _mean_distance(face.align_face(image).landmarks, aligned.landmarks) < 1.5


@pytest.mark.parametrize("kind", ["rgba", "grey", "cmyk", "grey16", "palette"])
def test_image_formats(tmp_path, portrait, aligned, kind):
    pil = PIL.Image.fromarray(portrait)
    if kind == "rgba":
        rgba = np.dstack([portrait, np.full(portrait.shape[:2], 255, np.uint8)])
        rgba[:40, :40, 3] = 0
        path = _write(tmp_path, "a.png", PIL.Image.fromarray(rgba))
    elif kind == "grey":
        path = _write(tmp_path, "g.png", pil.convert("L"))
    elif kind == "cmyk":
        path = _write(tmp_path, "c.jpg", pil.convert("CMYK"), quality=95)
    elif kind == "grey16":
        path = _write(tmp_path, "g16.png", PIL.Image.fromarray(np.asarray(pil.convert("L")).astype(np.uint16) * 257))
        assert PIL.Image.open(path).mode.startswith("I")
    else:
        path = _write(tmp_path, "p.png", pil.convert("P"))
    image = face.load_image(path)
    assert image.shape == portrait.shape and image.dtype == np.uint8
    if kind == "rgba":
        assert (image[:40, :40] == 255).all()  # transparency over white
        assert (image[40:] == portrait[40:]).all()
    if kind == "grey16":
        assert image.max() > 200  # 16 bits scaled down, not clipped to white or black
        assert (image[..., 0] == image[..., 2]).all()
    assert _mean_distance(face.align_face(image).landmarks, aligned.landmarks) < 1.5


def test_huge_photo_is_scaled_down(tmp_path, portrait, aligned):
    huge = PIL.Image.fromarray(portrait).resize((4922, 6000), PIL.Image.BILINEAR)
    image = face.load_image(_write(tmp_path, "huge.jpg", huge, quality=90))
    assert max(image.shape[:2]) == 2048 and image.shape[2] == 3
    assert _mean_distance(face.align_face(image).landmarks, aligned.landmarks) < 1.5
    assert face.load_image(np.asarray(huge), max_side=1000).shape[:2] == (1000, 820)


def test_arrays_of_other_types(portrait):
    assert (face.load_image(portrait.astype(np.float32) / 255) == portrait).all()
    assert (face.load_image(portrait.astype(np.uint16) * 257) == portrait).all()
    grey = face.load_image(portrait[..., 0])
    assert grey.shape == portrait.shape and (grey[..., 1] == portrait[..., 0]).all()


@pytest.mark.parametrize("content", [b"This is a text file, not a photo.\n", np.random.default_rng(0).bytes(4000)])
def test_not_an_image(tmp_path, content):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(FaceError, match="is not an image TalkFace can read"):
        face.load_image(path)


def test_missing_file_and_bad_arrays(tmp_path):
    with pytest.raises(FaceError, match="does not exist"):
        face.load_image(tmp_path / "nothing.png")
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros(7)):
        with pytest.raises(FaceError, match="is not an image"):
            face.load_image(bad)


# the canonical landmark frame


def test_mean_shape_is_canonical():
    m = face.MEAN_SHAPE.astype(np.float64)
    assert m.shape == (68, 2)
    assert np.abs(m.mean(0)).max() < 1e-3
    assert abs(np.sqrt((m**2).sum(1).mean()) - 1) < 1e-3
    mirrored = m[face.MIRROR] * [-1, 1]
    assert np.abs(mirrored - m).max() < 1e-3
    assert abs(m[36, 1] - m[45, 1]) < 1e-3 and m[36, 0] < 0 < m[45, 0]


def test_a_real_face_normalises_near_the_mean_shape(aligned):
    normalised, sim = face.normalise_landmarks(aligned.landmarks)
    assert normalised.shape == (68, 2)
    error = np.linalg.norm(normalised - face.MEAN_SHAPE, axis=-1)
    assert error[face.STABLE_POINTS].mean() < 0.06 and error.mean() < 0.15
    assert 0.005 < float(sim.scale) < 0.05  # a face ~130 px wide is ~2.7 units wide


def _random_similarity(rng, shape=()):
    angle = rng.uniform(-0.5, 0.5, shape)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return face.Similarity(rng.uniform(0.5, 2, shape), rotation, rng.uniform(-50, 50, (*shape, 2)))


def test_head_pose_does_not_change_the_canonical_shape(aligned):
    rng = np.random.default_rng(1)
    base, _ = face.normalise_landmarks(aligned.landmarks)
    moved = _random_similarity(rng, (3, 5)).apply(aligned.landmarks.astype(np.float64))  # (3, 5, 68, 2)
    normalised, sim = face.normalise_landmarks(moved)
    assert normalised.shape == (3, 5, 68, 2) and sim.scale.shape == (3, 5)
    np.testing.assert_allclose(normalised, np.broadcast_to(base, normalised.shape), atol=1e-6)
    # a reflection is not a head pose: the fit must not undo it
    reflected, _ = face.normalise_landmarks(aligned.landmarks * [-1, 1])
    assert np.abs(reflected - base).max() > 0.3


def test_round_trip_numpy_and_torch(aligned):
    lm = aligned.landmarks
    normalised, sim = face.normalise_landmarks(lm)
    np.testing.assert_allclose(face.denormalise_landmarks(normalised, sim), lm, atol=1e-4)

    rng = np.random.default_rng(2)
    batch = torch.tensor(_random_similarity(rng, (2, 4)).apply(lm.astype(np.float64)), dtype=torch.float32)
    batch.requires_grad_(True)
    normalised_t, sim_t = face.normalise_landmarks(batch)
    assert normalised_t.dtype == torch.float32 and normalised_t.shape == (2, 4, 68, 2)
    np.testing.assert_allclose(normalised_t.detach().numpy(), np.broadcast_to(normalised, (2, 4, 68, 2)), atol=1e-4)
    back = face.denormalise_landmarks(normalised_t, sim_t)
    torch.testing.assert_close(back, batch, atol=1e-3, rtol=0)
    normalised_t[..., face.MOUTH, 1].sum().backward()
    assert batch.grad is not None and torch.isfinite(batch.grad).all() and batch.grad.abs().sum() > 0
    # a numpy similarity applies to torch landmarks too (the reference face's pose, say)
    torch.testing.assert_close(
        face.denormalise_landmarks(torch.tensor(normalised, dtype=torch.float32), sim),
        torch.tensor(lm),
        atol=1e-3,
        rtol=0,
    )


def test_mouth_opening(aligned):
    closed = face.MEAN_SHAPE.copy()
    assert face.mouth_opening(closed) < 0.03
    opened = closed.copy()
    opened[[65, 66, 67], 1] += 0.2  # drop the lower inner lip
    assert face.mouth_opening(opened) == pytest.approx(face.mouth_opening(closed) + 0.2, abs=1e-5)
    assert face.mouth_opening(aligned.landmarks) > 4  # the astronaut smiles with her teeth showing
    both = torch.tensor(np.stack([closed, opened]))
    assert face.mouth_opening(both).shape == (2,)


# command line


def test_cli_writes_the_landmark_picture(tmp_path, portrait, capsys):
    photo = tmp_path / "me.png"
    PIL.Image.fromarray(portrait).save(photo)
    out = tmp_path / "landmarks.png"
    face.main([str(photo), "--out", str(out)])
    assert PIL.Image.open(out).size == (512, 512)
    assert "1 face(s) found" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="No face was found"):
        coffee = tmp_path / "coffee.png"
        PIL.Image.fromarray(skimage.data.coffee()).save(coffee)
        face.main([str(coffee), "--out", str(out)])


def test_a_big_phone_photo_is_judged_by_its_own_face_size(tmp_path):
    """A 5000 x 3000 photo is read at 2048 px (scale 0.41): its 83-pixel face is 34 pixels there. The minimum face
    size is about the photo as taken, so it is accepted (it was refused, reporting the shrunk size)."""
    from talkface.face import read_photo
    from talkface.pipeline import TalkingFacePipeline

    photo = face.load_image(Path(__file__).parent.parent / "assets" / "examples" / "face.jpg")
    canvas = np.full((3000, 5000, 3), 120, np.uint8)
    small = cv2.resize(photo, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
    canvas[1000 : 1000 + small.shape[0], 2000 : 2000 + small.shape[1]] = small
    PIL.Image.fromarray(canvas).save(tmp_path / "phone.jpg", quality=90)
    image, scale = read_photo(tmp_path / "phone.jpg")
    assert image.shape == (1229, 2048, 3) and scale == pytest.approx(2048 / 5000)
    with pytest.raises(FaceError, match="only 34 pixels wide"):  # judged at the size it was read
        face.align_face(image)
    aligned = TalkingFacePipeline.align(tmp_path / "phone.jpg")  # judged as taken: 83 pixels
    assert aligned.image.shape == (256, 256, 3)


@pytest.mark.slow
def test_decompression_bombs_are_refused_from_the_header_and_big_photos_read_in_bounded_memory(tmp_path):
    """A one-colour 13000² PNG is 0.5 MB on disk and 0.5 GB decoded: refused before decoding. The biggest PNG
    still read (a 7000² RGBA one, 49 MP) peaks well under 2 GB: Pillow reduces it before any float copy."""
    PIL.Image.new("L", (13000, 13000), 200).save(tmp_path / "bomb.png")
    PIL.Image.new("RGBA", (7000, 7000), (200, 180, 160, 255)).save(tmp_path / "big.png")
    assert (tmp_path / "bomb.png").stat().st_size < 2_000_000
    # VmHWM, not getrusage's ru_maxrss: that one keeps the peak of the forked pytest process across exec
    code = ("import sys; from talkface.face import read_photo; from talkface.errors import FaceError\n"
            "try:\n    image, scale = read_photo(sys.argv[1]); print('read', image.shape, round(scale, 3))\n"
            "except FaceError as e:\n    print('refused', e)\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "print('peak_mib', int(hwm) // 1024)")
    results = {}
    for name in ("bomb.png", "big.png"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent.parent).stdout
        results[name] = out
    assert "refused The file bomb.png is 13000x13000 pixels (169 megapixels)" in results["bomb.png"]
    assert "read (2048, 2048, 3) 0.293" in results["big.png"]
    for name, out in results.items():
        peak = int(out.split("peak_mib")[1])
        print(f"{name}: peak {peak} MiB")
        assert peak < 2048, f"{name}: peak {peak} MiB"


def test_a_face_turned_to_the_side_is_refused_and_a_frontal_or_slightly_turned_one_is_not():
    """scikit-image's cameraman is in three-quarter view: L2F would break it, so the app refuses it in a
    sentence. The astronaut and the Solvay faces (some turned a third of the way) pass."""
    from talkface.pipeline import TalkingFacePipeline

    camera = skimage.data.camera()
    assert abs(face.turn(face.align_face(camera).landmarks)) > face.MAX_TURN
    with pytest.raises(FaceError, match="turned too far to the side"):
        TalkingFacePipeline.align(camera)
    assert abs(face.turn(TalkingFacePipeline.align(skimage.data.astronaut()).landmarks)) < 0.05
    image = face.load_image(SOLVAY)
    h, w = image.shape[:2]
    turns = []
    for box in face.detect_faces(image)[:12]:
        size = max(box.width, box.height)
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        crop = image[int(max(0, cy - 3 * size)) : int(min(h, cy + 3 * size)),
                     int(max(0, cx - 3 * size)) : int(min(w, cx + 3 * size))]
        try:
            turns.append(face.turn(face.align_face(crop).landmarks))
        except FaceError:  # too small at this photo's size
            continue
    assert len(turns) >= 6 and max(abs(t) for t in turns) < face.MAX_TURN
