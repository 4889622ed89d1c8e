"""Paste-back on real photos: the bundled portrait as it is, tilted in an odd-sized portrait, small in a big
landscape photo, and near the photo's edge. No model is needed: pasting the aligned crop itself back must give
the photo again (the geometry is right), and a changed crop must change only the pixels under the mask."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from talkface.composite import PasteBack, face_mask, output_size
from talkface.face import MOUTH, align_face, load_image

PHOTO = Path(__file__).parent.parent / "assets" / "examples" / "face.jpg"


def _tilted_portrait(photo: np.ndarray) -> np.ndarray:
    """Rotated by 17 degrees inside an odd-sized 731 x 1003 portrait canvas."""
    h, w = photo.shape[:2]
    canvas = np.full((1003, 731, 3), 90, np.uint8)
    canvas[200 : 200 + h, 110 : 110 + w] = photo
    m = cv2.getRotationMatrix2D((110 + w / 2, 200 + h / 2), 17, 1.0)
    return cv2.warpAffine(canvas, m, (731, 1003), borderMode=cv2.BORDER_REPLICATE)


def _small_in_big(photo: np.ndarray) -> np.ndarray:
    """A 2400 x 1350 landscape (capped to 1280 x 720) with the portrait at 60 %: a face of ~75 output pixels."""
    canvas = np.full((1350, 2400, 3), 200, np.uint8)
    small = cv2.resize(photo, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas[700 : 700 + small.shape[0], 1500 : 1500 + small.shape[1]] = small
    return canvas


def _near_edge(photo: np.ndarray) -> np.ndarray:
    """The face 30 pixels from the left edge and the chin near the bottom: the aligned crop runs off the photo."""
    return np.ascontiguousarray(photo[60:330, 150:470])


CASES = {
    "bundled": (lambda p: p, (512, 512)),
    "tilted_portrait": (_tilted_portrait, (730, 1002)),
    "small_in_big": (_small_in_big, (1280, 720)),
    "near_edge": (_near_edge, (320, 270)),
}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_image(PHOTO)


@pytest.mark.parametrize("case", list(CASES))
def test_pasting_the_crop_itself_back_gives_the_photo(photo, case):
    make, size = CASES[case]
    aligned = align_face(make(photo))
    paste = PasteBack(aligned, region="face")
    assert (paste.width, paste.height) == size
    out = paste(aligned.image, aligned.landmarks)
    assert out.shape == (size[1], size[0], 3)
    changed = np.any(out != paste.background, axis=-1)
    assert changed.sum() > 0.3 * _face_area(paste, aligned)  # the face was blended in...
    # ...where it came from: the round trip (photo -> crop -> photo) only blurs by resampling
    error = np.abs(out.astype(int) - paste.background.astype(int))[changed].mean()
    assert error < 3.0, f"{case}: pasted-back face is {error:.1f} grey levels off the photo"


def _face_area(paste: PasteBack, aligned) -> float:
    scale = paste.width / aligned.photo.shape[1]
    mask = face_mask([aligned.landmarks], "face")
    crop_to_photo = 1 / np.sqrt(abs(np.linalg.det(aligned.transform[:, :2])))
    return float(mask.sum() * (crop_to_photo * scale) ** 2)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("region", ["lower", "face"])
def test_outside_the_mask_every_pixel_is_the_photos(photo, case, region):
    make, _ = CASES[case]
    aligned = align_face(make(photo))
    paste = PasteBack(aligned, region=region)
    k = output_size(aligned.photo.shape[1], aligned.photo.shape[0])[2]
    expected = cv2.resize(aligned.photo, (round(aligned.photo.shape[1] * k), round(aligned.photo.shape[0] * k)),
                          interpolation=cv2.INTER_AREA)[: paste.height, : paste.width] if k < 1 else \
        aligned.photo[: paste.height, : paste.width]
    np.testing.assert_array_equal(paste.background, expected)
    landmarks = aligned.landmarks.copy()
    landmarks[MOUTH[6:12], 1] += 12  # the lower lip and chin region pulled down: an open mouth
    landmarks[8, 1] += 12
    negative = 255 - aligned.image  # a frame unlike the photo everywhere
    out = paste(negative, landmarks)
    alpha = paste.alpha(landmarks)
    full = np.zeros((paste.height, paste.width), np.uint8)
    full[paste.roi] = alpha
    np.testing.assert_array_equal(out[full == 0], paste.background[full == 0])
    assert (full > 0).any() and np.abs(out[full == 255].astype(int) - paste.background[full == 255]).mean() > 40
    # the mask covers the moved mouth (in the output) and, for the lower face, leaves the eyes alone
    mouth = aligned.landmarks[MOUTH].mean(0)
    eye = aligned.landmarks[36:42].mean(0)
    to_out = cv2.invertAffineTransform(paste._to_crop)  # crop pixel -> output pixel, then ROI pixel
    to_out[:, 2] -= (paste.roi[1].start, paste.roi[0].start)
    for point, inside in ((mouth, True), (eye, region == "face")):
        x, y = np.round(to_out[:, :2] @ point + to_out[:, 2]).astype(int)
        assert (alpha[y, x] == 255) == inside, (case, region, point)


@pytest.mark.parametrize("case", ["bundled", "tilted_portrait"])
def test_frames_known_later_are_pasted_as_if_known_from_the_start(photo, case):
    """A streamed video starts before A2L has run over all the speech: the part of the output frames touch grows
    as later frames' landmarks come (``PasteBack.include``), and every frame comes out as with all of them known
    at the start."""
    aligned = align_face(CASES[case][0](photo))
    frames = np.repeat(aligned.landmarks[None], 3, axis=0)
    frames[1, 8, 1] += 20  # the chin down: an open mouth, later
    frames[2] += (9, -4)  # the head moved
    known = PasteBack(aligned, region="face", extent=frames)
    grown = PasteBack(aligned, region="face", extent=frames[:1])
    rng = np.random.default_rng(0)
    for i, landmarks in enumerate(frames):
        crop = rng.integers(0, 256, aligned.image.shape, np.uint8)
        grown.include(frames[i : i + 1])
        np.testing.assert_array_equal(grown(crop, landmarks, yuv=True), known(crop, landmarks, yuv=True))
    assert grown.roi == known.roi and grown.roi != PasteBack(aligned, region="face", extent=frames[:1]).roi


def test_the_mask_is_feathered_and_never_touches_the_crop_edge(photo):
    aligned = align_face(photo)
    mask = face_mask([aligned.landmarks], "face")
    assert mask.dtype == np.float32 and mask.max() == pytest.approx(1.0) and mask.min() == 0.0
    assert mask[:12].max() == 0 and mask[:, :12].max() == 0 and mask[-12:].max() == 0 and mask[:, -12:].max() == 0
    row = mask[int(aligned.landmarks[MOUTH].mean(0)[1])]
    ramp = row[(row > 0.02) & (row < 0.98)]
    assert len(ramp) >= 10  # a soft edge over at least 5 pixels on each side, no step


def test_a_crop_off_the_output_leaves_the_photo_alone(photo):
    """A transform that puts the crop wholly outside the output (nothing to paste): the photo, every frame."""
    aligned = align_face(photo)
    far = aligned.transform.copy()
    far[:, 2] -= 5000  # photo pixel -> crop pixel: the crop now lies far beyond the photo
    paste = PasteBack(dataclasses.replace(aligned, transform=far))
    assert paste.alpha(aligned.landmarks).size == 0
    np.testing.assert_array_equal(paste(aligned.image, aligned.landmarks), paste.background)
    np.testing.assert_array_equal(paste(aligned.image, aligned.landmarks, yuv=True),
                                  cv2.cvtColor(paste.background, cv2.COLOR_RGB2YUV_I420))


def test_output_size_caps_the_long_side_and_makes_it_even():
    assert output_size(1200, 1500) == (1024, 1280, pytest.approx(1280 / 1500))
    assert output_size(1201, 1499, 1280)[:2] == (1026, 1280)  # 1025.5 rounds to 1026
    assert output_size(641, 481) == (640, 480, 1.0)  # never enlarged; odd sides lose one pixel
    assert output_size(3000, 1000, 720)[:2] == (720, 240)
    with pytest.raises(ValueError):
        output_size(100, 100, 1)


def test_a_smaller_generator_frame_is_scaled_to_the_crop(photo):
    aligned = align_face(photo)
    paste = PasteBack(aligned)
    small = cv2.resize(aligned.image, (64, 64), interpolation=cv2.INTER_AREA)
    assert paste(small, aligned.landmarks).shape == (512, 512, 3)


@pytest.mark.parametrize("case", list(CASES))
def test_the_i420_frame_is_the_rgb_frames_own(photo, case):
    """What the encoder is given (I420 converted where the face changed only) is exactly OpenCV's conversion of
    the whole RGB frame, frame after frame."""
    make, _ = CASES[case]
    aligned = align_face(make(photo))
    rng = np.random.default_rng(0)
    rgb_paste, yuv_paste = PasteBack(aligned, region="face"), PasteBack(aligned, region="face")
    for _ in range(3):
        crop = np.clip(aligned.image.astype(int) + rng.integers(-40, 40, aligned.image.shape), 0, 255).astype(np.uint8)
        points = aligned.landmarks + rng.normal(0, 2, aligned.landmarks.shape).astype(np.float32)
        rgb = rgb_paste(crop, points).copy()
        planes = yuv_paste(crop, points, yuv=True)
        assert planes.shape == (rgb.shape[0] * 3 // 2, rgb.shape[1])
        np.testing.assert_array_equal(planes, cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420))
