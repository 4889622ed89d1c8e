"""Frames of the synthetic corpus: the warp keeps the photo intact where nothing moves, paints an open
mouth dark, closes eyes, and leaves no holes or seams."""

import cv2
import numpy as np
import pytest
import skimage.data

from talkface.data.articulation import MouthParams, apply_mouth, close_eyes, head_motion
from talkface.data.render import FaceMesh, close_photo_mouth, opencv_delaunay, qhull_delaunay, render_frames
from talkface.face import align_face


@pytest.fixture(scope="module")
def astronaut():
    """A real aligned face whose mouth is open in the photo (a smile showing teeth)."""
    face = align_face(skimage.data.astronaut())
    return face.image, face.landmarks.astype(np.float64)


def mouth(ref: np.ndarray, **values: float) -> np.ndarray:
    """Landmarks (1, 68, 2) of ``ref`` with the given mouth parameters (the others 0)."""
    row = np.zeros((1, 6))
    for k, name in enumerate(("jaw_open", "lip_width", "lip_round", "lip_closure", "lower_lip_tuck",
                              "upper_lip_raise")):
        row[0, k] = values.get(name, 0.0)
    return apply_mouth(ref, MouthParams.from_array(row))


def polygon_mask(points: np.ndarray, shape: tuple[int, int], erode: int = 0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return mask.astype(bool)


def luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ [0.299, 0.587, 0.114]


def test_shapes_types_and_determinism(astronaut):
    image, ref = astronaut
    lm = np.concatenate([mouth(ref, jaw_open=t) for t in np.linspace(0, 1, 6)])
    a = render_frames(image, ref, lm, rng=np.random.default_rng(3))
    b = render_frames(image, ref, lm, rng=np.random.default_rng(3))
    assert a.shape == (6, 256, 256, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_backward_map_is_finite_and_covers_every_pixel(astronaut):
    _, ref = astronaut
    mesh = FaceMesh(ref)
    for lm in (ref, mouth(ref, jaw_open=1.2)[0], mouth(ref, lip_closure=1.0)[0]):
        map_x, map_y = mesh.backward_map(mesh.frame_points(lm))
        assert np.isfinite(map_x).all() and np.isfinite(map_y).all()
        # every pixel samples inside (or just at the edge of) the photo
        assert map_x.min() > -2 and map_x.max() < 258 and map_y.min() > -2 and map_y.max() < 258


def test_background_far_from_the_face_stays_put(astronaut):
    image, ref = astronaut
    lm = np.repeat(mouth(ref, jaw_open=0.8), 29, axis=0)
    head = head_motion(29, np.random.default_rng(0), center=tuple(ref.mean(0)))
    lm = np.einsum("tij,tkj->tki", head[:, :, :2], lm) + head[:, None, :, 2]
    frames = render_frames(image, ref, lm, rng=np.random.default_rng(0))
    for ys, xs in ((slice(0, 16), slice(0, 16)), (slice(0, 16), slice(240, 256)), (slice(240, 256), slice(0, 16)),
                   (slice(240, 256), slice(240, 256))):
        diff = np.abs(frames[:, ys, xs].astype(int) - image[ys, xs].astype(int))
        assert diff.mean() < 0.5, (ys, xs, diff.mean())


def test_reference_pose_gives_back_the_photo_outside_the_mouth(astronaut):
    image, ref = astronaut
    frame = render_frames(image, ref, ref[None])[0]
    outside = ~polygon_mask(ref[48:60], image.shape[:2])
    outside &= ~cv2.dilate(polygon_mask(ref[48:60], image.shape[:2]).astype(np.uint8), np.ones((9, 9))).astype(bool)
    diff = np.abs(frame.astype(int) - image.astype(int))[outside]
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) < 8


def test_open_mouth_is_dark_inside_and_closed_mouth_is_not(astronaut):
    image, ref = astronaut
    lm = np.concatenate([mouth(ref, jaw_open=1.0), mouth(ref, lip_closure=1.0)])
    frames = render_frames(image, ref, lm, rng=np.random.default_rng(0))
    y = luma(frames)
    skin = polygon_mask(ref[[2, 3, 4, 5, 31]], image.shape[:2])
    # open: the cavity, below the upper teeth, is much darker than the skin
    inner = polygon_mask(lm[0, 60:68], image.shape[:2], erode=1)
    lower_half = np.zeros_like(inner)
    lower_half[int(lm[0, [61, 62, 63], 1].mean()) + 4 :, :] = True
    assert inner.sum() > 100
    assert y[0][inner & lower_half].mean() < 0.55 * y[0][skin].mean()
    # closed: the photo's teeth are gone, the mouth area looks like lips and skin
    band = polygon_mask(lm[1, 48:60], image.shape[:2])
    assert y[1][band].mean() > 0.7 * y[1][skin].mean()
    assert np.percentile(y[1][band], 99) < np.percentile(luma(image)[skin], 99) + 10


def test_photo_with_open_mouth_is_inpainted_with_lip_colour(astronaut):
    image, ref = astronaut
    closed, teeth = close_photo_mouth(image, ref)
    assert teeth is not None and teeth.mean() > 180  # the astronaut shows her (light) teeth
    inner = polygon_mask(ref[60:68], image.shape[:2], erode=1)
    # the bright teeth are gone
    assert luma(closed)[inner].mean() < luma(image)[inner].mean() - 20
    # a closed-mouthed photo is left alone
    shut = mouth(ref, lip_closure=1.0)[0]
    same, none = close_photo_mouth(image, shut)
    assert none is None and same is image


def test_blink_covers_the_eye_with_skin(astronaut):
    image, ref = astronaut
    lm = close_eyes(ref[None].astype(np.float32), np.array([1.0]))
    frame = render_frames(image, ref, lm)[0]
    for eye in (slice(36, 42), slice(42, 48)):
        inside = polygon_mask(ref[eye], image.shape[:2])
        # the dark iris and the white of the eye are replaced by skin: much less contrast
        assert luma(frame)[inside].std() < 0.5 * luma(image)[inside].std()
        assert luma(frame)[inside].min() > luma(image)[inside].min() + 15


def test_no_holes_or_seams_on_a_smooth_image(astronaut):
    """A smooth gradient warped to a wide-open mouth stays smooth away from the mouth and the eyes
    (which are painted, and where the photo's own open mouth is filled in): a hole, a wrongly mapped
    triangle or a seam would show as a jump between neighbouring pixels."""
    _, ref = astronaut
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float64)
    smooth = np.stack([xx * 0.8, yy * 0.8, 128 + 60 * np.sin(xx / 40) * np.cos(yy / 50)], axis=2).astype(np.uint8)
    lm = np.concatenate([mouth(ref, jaw_open=1.2, lip_width=-1.0, lip_round=1.0), mouth(ref, lip_closure=1.0)])
    frames = render_frames(smooth, ref, close_eyes(lm, np.array([0.0, 1.0])), teeth=False)
    for frame, marks in zip(frames, lm):
        painted = cv2.dilate(polygon_mask(marks[48:60], (256, 256)).astype(np.uint8), np.ones((7, 7))).astype(bool)
        for eye in (slice(36, 42), slice(42, 48)):
            painted |= cv2.dilate(polygon_mask(marks[eye], (256, 256)).astype(np.uint8), np.ones((9, 9))).astype(bool)
        f = frame.astype(int)
        jump_x = np.abs(np.diff(f, axis=1)).max(2)[~(painted[:, 1:] | painted[:, :-1])]
        jump_y = np.abs(np.diff(f, axis=0)).max(2)[~(painted[1:] | painted[:-1])]
        assert max(jump_x.max(), jump_y.max()) <= 8  # 0.8 grey levels a pixel, stretched up to ~7x


def test_blink_frame_closes_the_eyes_dlib_sees(astronaut):
    """The living head's blinks, added to a finished frame: dlib's eye aspect ratio drops to a closed eye's, and
    away from the eyes and brows the frame is untouched."""
    from talkface.data.render import blink_frame
    from talkface.face import detect_landmarks

    image, ref = astronaut

    def ear(points):
        eye = points[36:42]
        vertical = np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])
        return vertical / (2 * np.linalg.norm(eye[0] - eye[3]))

    closed = close_eyes(ref[None], np.ones(1, np.float32))[0]
    out = blink_frame(image, ref, closed)
    assert ear(detect_landmarks(out)) < 0.6 * ear(detect_landmarks(image))
    half = blink_frame(image, ref, close_eyes(ref[None], np.full(1, 0.5, np.float32))[0])
    assert ear(detect_landmarks(out)) < ear(detect_landmarks(half)) < ear(detect_landmarks(image))
    lower = int(ref[27:36, 1].max()) + 10  # below the nose: nothing to do with the eyes
    assert np.abs(out[lower:].astype(int) - image[lower:]).max() <= 1


def test_opencv_triangulates_a_face_as_qhull_does(astronaut):
    """The blinks' meshes are OpenCV's (no scipy on the app's path), the corpus's Qhull's: the same triangles on a
    face's mesh, the photo's and moved ones."""
    _, ref = astronaut
    rng = np.random.default_rng(0)
    for jitter in (0.0, 1.0, 2.0):
        mesh = FaceMesh(ref + rng.normal(0, jitter, ref.shape))
        points = np.concatenate([mesh.src[:68], mesh.ring, mesh.border])
        ours = {tuple(sorted(t)) for t in opencv_delaunay(points).tolist()}
        assert ours == {tuple(sorted(t)) for t in qhull_delaunay(points).tolist()} and len(ours) > 150


def test_a_blink_changes_the_eyes_box_only_as_the_whole_frames_warp_would(astronaut):
    """blink_frame maps and resamples only the box of the triangles the lids move: there the pixels of the whole
    frame's warp (the same mesh), everywhere else the frame itself."""
    from talkface.data.render import _EyelidPainter, blink_frame

    image, ref = astronaut
    for closure in (0.5, 1.0):
        closed = close_eyes(ref[None], np.full(1, closure, np.float32))[0]
        out = blink_frame(image, ref, closed)
        mesh = FaceMesh(ref, delaunay=opencv_delaunay)
        whole = cv2.remap(image, *mesh.backward_map(mesh.frame_points(closed.astype(np.float64))), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        _EyelidPainter(image, ref).paint(whole, closed.astype(np.float64))
        changed = np.abs(out.astype(int) - image).max(-1) > 0
        ys, xs = np.nonzero(changed)
        assert ys.max() < ref[27:36, 1].max() + 10  # nothing below the nose
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        np.testing.assert_array_equal(out[box], whole[box])
        assert np.abs(whole.astype(int) - out).max() <= 1  # outside: the identity map, within rounding
