"""Face geometry, in one place: reading photos, finding faces, aligning them, 68 landmarks.

The app, the corpus generator, data preparation and training all call these functions, so a face
is framed and measured the same way everywhere (paper §IV-B: every frame aligned, cropped to
256x256, dlib's 68 points as ground truth).

- ``load_image``: any photo a person might upload -> upright HxWx3 uint8 RGB.
- ``detect_faces``: mediapipe's full-range face detector over a pyramid of tiles, so that a
  portrait and a group photo of small faces both work.
- ``align_face``: the largest face's eyes and mouth moved onto ``TEMPLATE`` by a similarity
  transform, in a 256x256 crop framed like an LRW frame, with dlib's 68 landmarks.
- ``normalise_landmarks`` / ``denormalise_landmarks``: the canonical frame A2L works in (head pose
  removed by a Procrustes fit on points that do not move when a person speaks).

See it at work: ``python -m talkface.face PHOTO --out landmarks.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import PIL.Image
import PIL.ImageOps

from talkface.errors import FaceError

if TYPE_CHECKING:  # torch is not imported here: a photo is aligned without it (the CLI does so beside its imports)
    import torch

CROP_SIZE = 256
MIN_PHOTO_SIDE = 64  # pixels, as the photo was taken: smaller ones are refused

# Where alignment puts the eye centres and the mouth centre (dlib: mean of 36-41, 42-47, 48-67) in
# the 256x256 crop; "right" is the person's right eye, on the image's left. LRW-like framing: face
# centred, hair and neck visible, face (jaw) about 52% of the crop wide, mouth centre in the middle
# of LRW's usual mouth ROI (rows 115-211, cols 79-175); eye-to-mouth = 1.1 x eye distance, the
# median of 29 real faces (skimage's astronaut and the 1927 Solvay photo).
TEMPLATE: dict[str, tuple[float, float]] = {
    "right_eye": (98.0, 100.0),
    "left_eye": (158.0, 100.0),
    "mouth": (128.0, 166.0),
}
# The box dlib's shape predictor starts from in an aligned crop (x0, y0, x1, y1 crop pixels): the
# mean of the boxes dlib's own face detector draws on those 29 aligned faces, i.e. what it was
# trained with.
TEMPLATE_BOX: tuple[int, int, int, int] = (53, 59, 200, 206)

# dlib's 68-point layout (iBUG 300-W); "right" is the person's right.
JAW = list(range(0, 17))
RIGHT_BROW = list(range(17, 22))
LEFT_BROW = list(range(22, 27))
NOSE = list(range(27, 36))
RIGHT_EYE = list(range(36, 42))
LEFT_EYE = list(range(42, 48))
OUTER_LIP = list(range(48, 60))
INNER_LIP = list(range(60, 68))
MOUTH = OUTER_LIP + INNER_LIP
# Nose and eye corners stay put while a person speaks or blinks: fitting head pose on them removes
# head motion from landmarks without removing mouth or jaw motion.
STABLE_POINTS = [*NOSE, 36, 39, 42, 45]
# Point i of a face is point MIRROR[i] of its mirror image (for flips and symmetry).
MIRROR = [
    *range(16, -1, -1),
    *range(26, 21, -1), *range(21, 16, -1),
    27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    64, 63, 62, 61, 60, 67, 66, 65,
]  # fmt: skip

# The canonical landmark frame: zero mean, unit RMS distance from the centroid, x right, y down,
# symmetric, so the eyes are level. Derived once from dlib's landmarks on the same 29 aligned faces:
# generalised Procrustes mean over all 68 points, averaged with its mirror image, rescaled. The mouth
# is nearly closed (inner-lip gap 0.02), a neutral face.
# fmt: off
MEAN_SHAPE: np.ndarray = np.array(
    [
        (-1.3763, -0.7192), (-1.3441, -0.3570), (-1.3007, -0.0048), (-1.2378, 0.3392), (-1.1289, 0.6690),
        (-0.9375, 0.9611), (-0.6757, 1.1904), (-0.3634, 1.3669), (0.0000, 1.4131), (0.3634, 1.3669),
        (0.6757, 1.1904), (0.9375, 0.9611), (1.1289, 0.6690), (1.2378, 0.3392), (1.3007, -0.0048),
        (1.3441, -0.3570), (1.3763, -0.7192), (-1.0878, -0.8638), (-0.9198, -1.0320), (-0.6690, -1.0984),
        (-0.4021, -1.0838), (-0.1598, -0.9937), (0.1598, -0.9937), (0.4021, -1.0838), (0.6690, -1.0984),
        (0.9198, -1.0320), (1.0878, -0.8638), (0.0000, -0.7831), (0.0000, -0.5473), (0.0000, -0.3096),
        (0.0000, -0.0645), (-0.2539, 0.1073), (-0.1351, 0.1499), (0.0000, 0.1841), (0.1351, 0.1499),
        (0.2539, 0.1073), (-0.8148, -0.7153), (-0.6687, -0.8004), (-0.4978, -0.8039), (-0.3443, -0.7032),
        (-0.5056, -0.6652), (-0.6719, -0.6625), (0.3443, -0.7032), (0.4978, -0.8039), (0.6687, -0.8004),
        (0.8148, -0.7153), (0.6719, -0.6625), (0.5056, -0.6652), (-0.4920, 0.5795), (-0.3039, 0.4938),
        (-0.1320, 0.4483), (0.0000, 0.4790), (0.1320, 0.4483), (0.3039, 0.4938), (0.4920, 0.5795),
        (0.3078, 0.6791), (0.1384, 0.7142), (0.0000, 0.7212), (-0.1384, 0.7142), (-0.3078, 0.6791),
        (-0.4150, 0.5735), (-0.1339, 0.5466), (0.0000, 0.5636), (0.1339, 0.5466), (0.4150, 0.5735),
        (0.1337, 0.5652), (0.0000, 0.5815), (-0.1337, 0.5652),
    ],
    dtype=np.float32,
)
# fmt: on


# reading photos

_NOT_AN_IMAGE = "is not an image TalkFace can read; please use a JPEG or PNG photo."


# Pixels a photo may have. A JPEG is decoded at a reduced scale (DCT scaling) and costs little whatever its size, up
# to Pillow's own bomb limit; other formats are decoded whole before they can be shrunk: a 13000² PNG of one colour
# is under 1 MB on disk and 0.5 GB decoded, so they stop at 50 MP (an 8660 x 5770 photo; phones' PNGs and HEIC
# conversions are smaller).
MAX_PIXELS_DECODED_WHOLE = 50_000_000
MAX_PIXELS_JPEG = 180_000_000


def load_image(source: str | os.PathLike | np.ndarray | PIL.Image.Image, max_side: int = 2048) -> np.ndarray:
    """Any photo a person might upload -> upright HxWx3 uint8 RGB whose long side is <= ``max_side``.

    Phones store portraits sideways with an EXIF orientation tag, PNGs come with transparency or 16
    bits, scans in CMYK or grey: all become the one format the rest of TalkFace expects. Decompression bombs
    (more pixels than ``MAX_PIXELS_*``) are refused from the header, before any decoding.
    """
    return read_photo(source, max_side)[0]


def read_photo(source: str | os.PathLike | np.ndarray | PIL.Image.Image, max_side: int = 2048
               ) -> tuple[np.ndarray, float]:
    """``load_image`` and the scale it read the photo at (1.0, or less when it was shrunk to `max_side`): face
    sizes are about the photo as it was taken, not as it was read."""
    scale = 1.0
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
    else:
        name = "This picture"
        try:
            if isinstance(source, PIL.Image.Image):
                img = source
            else:
                name = f"The file {Path(source).name}"
                img = PIL.Image.open(source)
            w, h = img.size
            limit = MAX_PIXELS_JPEG if img.format == "JPEG" else MAX_PIXELS_DECODED_WHOLE
            if w * h > limit:
                raise FaceError(f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels), more than TalkFace "
                                f"reads ({limit / 1e6:.0f}); please use a smaller photo.")
            scale = min(1.0, max_side / max(w, h))
            if scale < 1 and not isinstance(source, PIL.Image.Image):
                # JPEG: decode a big photo at a reduced scale straight away
                img.draft("RGB", (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
                # other formats: an integer box reduction in Pillow before any conversion to float (16-bit,
                # transparency), so no full-size float copy is ever made
                factor = max(img.size) // max_side
                if factor >= 2:
                    img = img.reduce(factor)
            rgb = _pil_to_rgb(PIL.ImageOps.exif_transpose(img))
        except FileNotFoundError:
            raise FaceError(f"{name} does not exist.") from None
        except PIL.Image.DecompressionBombError:
            raise FaceError(f"{name} has too many pixels to be a photo TalkFace can use.") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise FaceError(f"{name} {_NOT_AN_IMAGE}") from exc
    h, w = rgb.shape[:2]
    if max(h, w) > max_side:
        f = max_side / max(h, w)
        rgb = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb), scale


def _pil_to_rgb(img: PIL.Image.Image) -> np.ndarray:
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit integer or float grey
        return _array_to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        return _array_to_rgb(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) of any numeric type -> HxWx3 uint8, transparency
    over white; floats are taken as 0-1 if they stay within it, otherwise as 0-255."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.size == 0 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise FaceError(f"This picture {_NOT_AN_IMAGE}")
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        return a
    if a.dtype == np.bool_:
        a = a.astype(np.float32) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32))
        a = a * 255 if a.max() <= 1 else a
    elif a.dtype != np.uint8:  # 16-bit (or wider) integers
        a = a.astype(np.float32) / (257 if a.max() > 255 else 1)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.shape[2] == 4:
        alpha = a[..., 3:].astype(np.float32) / 255
        a = a[..., :3] * alpha + 255 * (1 - alpha)
    return np.clip(np.asarray(a, np.float32) + 0.5, 0, 255).astype(np.uint8)


# finding faces


@dataclass
class FaceBox:
    """A detected face in image pixels. ``keypoints`` (6x2) are mediapipe's: right eye, left eye,
    nose tip, mouth centre, right ear, left ear ("right" = the person's right)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


_detectors: dict[int, object] = {}
_detector_lock = threading.Lock()
# The detector looks at a 192x192 input and finds faces down to about a tenth of it. Ever smaller
# tiles (halving) bring small faces in big photos into its range; below 192 a tile would only be
# upscaled, so the pyramid stops there.
_MIN_TILE = 192
_TILE_STRIDE = 0.6  # of the tile size: any face up to 40% of a tile lies whole inside some tile
_SURE_FRACTION = 0.12  # faces wider than this fraction of a tile are all found at that tile size
_FULL_RANGE, _SHORT_RANGE = 1, 0


def _detect_tile(tile: np.ndarray, model: int = _FULL_RANGE) -> list[FaceBox]:
    with _detector_lock:  # one graph per model and process; mediapipe graphs must not run concurrently
        if model not in _detectors:
            import mediapipe as mp  # slow to import: only when a face is first looked for

            # The full-range model finds close-ups and distant faces alike and is the one used on tiles
            # (the short-range one reports faces that are not there in tiles). On the whole image the
            # short-range one is asked too: it finds blurry or greyscale close-ups the other misses.
            _detectors[model] = mp.solutions.face_detection.FaceDetection(
                model_selection=model, min_detection_confidence=0.5
            )
        result = _detectors[model].process(np.ascontiguousarray(tile))
    h, w = tile.shape[:2]
    faces = []
    for det in result.detections or []:
        box = det.location_data.relative_bounding_box
        kps = np.array([(k.x * w, k.y * h) for k in det.location_data.relative_keypoints], np.float32)
        x0, y0 = box.xmin * w, box.ymin * h
        faces.append(FaceBox(x0, y0, x0 + box.width * w, y0 + box.height * h, float(det.score[0]), kps))
    return faces


def _tile_starts(length: int, tile: int) -> list[int]:
    if tile >= length:
        return [0]
    n = int(np.ceil((length - tile) / (tile * _TILE_STRIDE))) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _detect_level(image: np.ndarray, tile: int) -> list[FaceBox]:
    """Faces in overlapping ``tile``-sized squares, except those cut by an edge between tiles."""
    h, w = image.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    margin = 0.02 * tile
    faces = []
    for ty in _tile_starts(h, tile):
        for tx in _tile_starts(w, tile):
            for f in _detect_tile(image[ty : ty + th, tx : tx + tw]):
                cut = (
                    (tx > 0 and f.x0 < margin)
                    or (ty > 0 and f.y0 < margin)
                    or (tx + tw < w and f.x1 > tw - margin)
                    or (ty + th < h and f.y1 > th - margin)
                )
                if not cut:
                    kps = f.keypoints + np.array([tx, ty], np.float32)
                    faces.append(FaceBox(f.x0 + tx, f.y0 + ty, f.x1 + tx, f.y1 + ty, f.score, kps))
    return faces


def _iou(a: FaceBox, b: FaceBox) -> float:
    iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = iw * ih
    return inter / (a.width * a.height + b.width * b.height - inter + 1e-9)


def _detect(image: np.ndarray, all_levels: bool) -> list[FaceBox]:
    """Whole image first, then ever smaller tiles; the same face found twice is kept once.

    ``all_levels=False`` stops at the first tile size whose largest face is surely in range: no
    larger face can be missing, since it would fill even more of these tiles.
    """
    faces: list[FaceBox] = []
    tile = max(image.shape[:2])
    while True:
        found = _detect_level(image, tile)
        if tile == max(image.shape[:2]):
            found += _detect_tile(image, _SHORT_RANGE)
        faces += found
        if found and not all_levels and max(f.width for f in found) >= _SURE_FRACTION * tile:
            break
        tile //= 2
        if tile < _MIN_TILE:
            break
    kept: list[FaceBox] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(_iou(f, k) < 0.3 for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: -f.width * f.height)


def detect_faces(image: np.ndarray) -> list[FaceBox]:
    """Every face in an RGB image (see ``load_image``), largest first. About 1 s for a 2000 px group
    photo; ``align_face`` stops searching sooner."""
    return _detect(_array_to_rgb(image), all_levels=True)


# aligning faces


@dataclass
class AlignedFace:
    """The largest face aligned to ``TEMPLATE``: the crop, its 68 landmarks (crop pixels), the
    number of faces seen, the chosen face's box, the 2x3 affine mapping the image to the crop, and the
    image itself (RGB, as read: what ``talkface.composite`` pastes the generated face back into)."""

    image: np.ndarray
    landmarks: np.ndarray
    num_faces: int
    box: FaceBox
    transform: np.ndarray
    photo: np.ndarray | None = None


def _anchors(landmarks: np.ndarray) -> np.ndarray:
    """The points ``TEMPLATE`` places: eye centres and mouth centre."""
    return np.stack([landmarks[RIGHT_EYE].mean(0), landmarks[LEFT_EYE].mean(0), landmarks[MOUTH].mean(0)])


# How far the nose tip may sit from the middle of the jaw line, as a fraction of the jaw's width (0 frontal, 0.5 a
# full profile): the 27 faces of the 1927 Solvay photo, some turned a third of the way, lie within 0.14; scikit-image's
# cameraman, in three-quarter view, is at 0.29. L2F, trained on frontal faces, breaks such a face.
MAX_TURN = 0.22


def turn(landmarks: np.ndarray) -> float:
    """Where the nose tip (30) sits between the jaw's two ends (0 and 16), minus the middle: 0 for a face looking
    at the camera, towards ±0.5 as it turns to a profile (the sign says which way)."""
    left, right, nose = landmarks[0, 0], landmarks[16, 0], landmarks[30, 0]
    return float((nose - left) / max(right - left, 1e-6) - 0.5)


def align_photo(photo: str | os.PathLike | np.ndarray | PIL.Image.Image) -> AlignedFace:
    """A photo of any format, read and its largest face aligned, as the app and the CLI take it: refused with a
    plain sentence (FaceError) when it is smaller than MIN_PHOTO_SIDE as taken or holds no usable face."""
    image, scale = read_photo(photo)
    h, w = (round(n / scale) for n in image.shape[:2])  # the photo as taken
    if min(h, w) < MIN_PHOTO_SIDE:
        raise FaceError(f"The photo is only {w}x{h} pixels; please use a photo at least "
                        f"{MIN_PHOTO_SIDE} pixels on each side.")
    return align_face(image, scale=scale, frontal=True)


def align_face(image: np.ndarray, size: int = CROP_SIZE, min_face: int = 40, scale: float = 1.0,
               frontal: bool = False) -> AlignedFace:
    """Crop the largest face of an RGB image to ``size`` x ``size``, eyes and mouth on ``TEMPLATE``.

    A first alignment uses the detector's eye and mouth points, read off a 192-pixel view of the
    photo; it is redone once from dlib's eye and mouth centres, the points ``TEMPLATE`` is defined
    by. (Further rounds do not converge: they wander by about a pixel, dlib's own noise.)
    ``num_faces`` counts the faces found at the tile sizes searched (all of them in a group photo of
    similar-sized faces). `scale`: how far the photo was shrunk when read (``read_photo``); `min_face` is about
    the photo as taken, so a big phone photo read at 2048 px is not called too small for its shrinking.
    `frontal`: refuse a face turned further than ``MAX_TURN`` (the app's photos; a training identity is
    checked its own way).
    """
    rgb = _array_to_rgb(image)
    faces = _detect(rgb, all_levels=False)
    if not faces:
        raise FaceError(
            "No face was found in this photo; please use a photo in which a face is clearly visible "
            "and looks towards the camera."
        )
    box = faces[0]
    face_px = round(max(box.width, box.height) / scale)
    if face_px < min_face:
        raise FaceError(
            f"The face in this photo is only {face_px} pixels wide and TalkFace needs at least {min_face}; "
            "please use a larger or closer photo of the face."
        )
    target = np.array(list(TEMPLATE.values())) * (size / CROP_SIZE)
    points = box.keypoints[[0, 1, 3]].astype(np.float64)  # right eye, left eye, mouth centre
    for _ in range(2):
        sim = estimate_similarity(points, target, points=[0, 1, 2])
        transform = np.concatenate([sim.scale * sim.rotation, sim.translation[:, None]], axis=1)
        crop = cv2.warpAffine(
            rgb, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        landmarks = detect_landmarks(crop)
        points = sim.invert(_anchors(landmarks)[None])[0]
    if frontal and abs(turn(landmarks)) > MAX_TURN:
        raise FaceError("The face in this photo is turned too far to the side; TalkFace needs a face looking "
                        "roughly towards the camera. Please use a photo taken from the front.")
    return AlignedFace(crop, landmarks, len(faces), box, transform, rgb)


# 68 landmarks

_predictor = None
_predictor_lock = threading.Lock()
_UPSCALE = 4  # dlib answers in whole pixels; on a 4x upscaled crop that is a quarter of a pixel


def _shape_predictor():
    global _predictor
    with _predictor_lock:
        if _predictor is None:
            import dlib

            spec = importlib.util.find_spec("face_recognition_models")
            if spec is None or spec.origin is None:
                raise FaceError("The face landmark model is missing; please reinstall TalkFace.")
            path = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
            _predictor = dlib.shape_predictor(str(path))
    return _predictor


def detect_landmarks(crop: np.ndarray, rect: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """dlib's 68 landmarks (68x2 float32, crop pixels) of the face in an aligned RGB crop.

    No detector runs: the face is where alignment put it, in ``TEMPLATE_BOX`` scaled to the crop
    (or ``rect`` = x0, y0, x1, y1), which keeps per-frame landmarks fast and free of detector jitter.
    """
    import dlib

    rgb = _array_to_rgb(crop)
    if rect is None:
        rect = tuple(v * rgb.shape[0] / CROP_SIZE for v in TEMPLATE_BOX)
    big = cv2.resize(rgb, None, fx=_UPSCALE, fy=_UPSCALE, interpolation=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = (round(v * _UPSCALE) for v in rect)
    shape = _shape_predictor()(big, dlib.rectangle(x0, y0, x1, y1))
    points = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
    return (points + 0.5) / _UPSCALE - 0.5  # resize maps pixel centres: j -> (j + 0.5) / 4 - 0.5


# the canonical landmark frame


@dataclass
class Similarity:
    """x -> scale * rotation @ x + translation; numpy or torch, batched over leading dimensions:
    scale (...), rotation (..., 2, 2), translation (..., 2)."""

    scale: np.ndarray | torch.Tensor
    rotation: np.ndarray | torch.Tensor
    translation: np.ndarray | torch.Tensor

    def apply(self, points):
        """(..., N, 2) points -> (..., N, 2)."""
        rotated = points @ _transposed(self.rotation)
        return self.scale[..., None, None] * rotated + self.translation[..., None, :]

    def invert(self, points):
        """The inverse of ``apply``."""
        return (points - self.translation[..., None, :]) @ self.rotation / self.scale[..., None, None]


def _is_tensor(x) -> bool:
    """Whether `x` is a torch tensor, without importing torch (if it is not imported, `x` is not one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _transposed(m):
    return m.transpose(-1, -2) if _is_tensor(m) else np.swapaxes(m, -1, -2)


def estimate_similarity(landmarks, target=MEAN_SHAPE, points=STABLE_POINTS) -> Similarity:
    """Least-squares similarity (Umeyama: no reflection) taking ``landmarks[..., points, :]`` onto
    ``target[..., points, :]``; numpy or torch (differentiable), batched over leading dimensions."""
    is_torch = _is_tensor(landmarks)
    if is_torch:
        import torch

        target = torch.as_tensor(target, dtype=landmarks.dtype, device=landmarks.device)
    else:
        landmarks, target = np.asarray(landmarks, np.float64), np.asarray(target, np.float64)
    src, dst = landmarks[..., points, :], target[..., points, :]
    src_mean, dst_mean = src.mean(-2), dst.mean(-2)
    x, y = src - src_mean[..., None, :], dst - dst_mean[..., None, :]
    # In 2D the best rotation has a closed form: its angle is atan2(sum of cross, sum of dot products).
    dot = (x * y).sum((-2, -1))
    cross = (x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0]).sum(-1)
    norm = (dot**2 + cross**2) ** 0.5
    cos, sin = dot / norm, cross / norm
    stack = sys.modules["torch"].stack if is_torch else np.stack
    rotation = stack([stack([cos, -sin], -1), stack([sin, cos], -1)], -2)
    scale = norm / (x**2).sum((-2, -1))
    translation = dst_mean - scale[..., None] * (rotation @ src_mean[..., None])[..., 0]
    return Similarity(scale if is_torch else np.asarray(scale), rotation, translation)


def normalise_landmarks(landmarks, sim: Similarity | None = None):
    """(..., 68, 2) crop pixels -> the canonical frame of ``MEAN_SHAPE``; returns (normalised, sim).

    Without ``sim`` each face's head pose is estimated from its own ``STABLE_POINTS``."""
    if sim is None:
        sim = estimate_similarity(landmarks)
    landmarks, sim = _alike(landmarks, sim)
    return sim.apply(landmarks), sim


def denormalise_landmarks(landmarks, sim: Similarity):
    """Canonical frame -> crop pixels: the inverse of ``normalise_landmarks`` with the same ``sim``."""
    landmarks, sim = _alike(landmarks, sim)
    return sim.invert(landmarks)


def _alike(landmarks, sim: Similarity) -> tuple:
    """Landmarks and similarity as one kind of array (torch keeps the landmarks' dtype and device)."""
    fields = (sim.scale, sim.rotation, sim.translation)
    if _is_tensor(landmarks):
        import torch

        like = {"dtype": landmarks.dtype, "device": landmarks.device}
        return landmarks, Similarity(*(torch.as_tensor(v, **like) for v in fields))
    return np.asarray(landmarks, np.float64), Similarity(*(np.asarray(v, np.float64) for v in fields))


def mouth_opening(landmarks):
    """(..., 68, 2) -> (...): mean inner-lip gap (61-67, 62-66, 63-65) in the landmarks' units."""
    gap = landmarks[..., [61, 62, 63], :] - landmarks[..., [67, 66, 65], :]
    return ((gap**2).sum(-1) ** 0.5).mean(-1)


def inter_ocular(landmarks) -> np.ndarray:
    """(..., 68, 2) -> (...): distance between the eye centres, the face's size unit."""
    landmarks = np.asarray(landmarks)
    return np.linalg.norm(landmarks[..., 42:48, :].mean(-2) - landmarks[..., 36:42, :].mean(-2), axis=-1)


def lip_opening(landmarks) -> np.ndarray:
    """(..., 68, 2) -> (...): the inner-lip gap in inter-ocular distances, comparable across faces and videos."""
    landmarks = np.asarray(landmarks, np.float64)
    return mouth_opening(landmarks) / inter_ocular(landmarks)


def track_landmarks(frames: Iterable[np.ndarray]) -> np.ndarray:
    """dlib's 68 landmarks (N, 68, 2) of the largest face in every RGB frame of any size (NaN where none):
    how real and generated videos are compared, independently of the landmarks a model was given.

    dlib's detector runs on each frame (again at twice the size if it finds nothing, for small faces), the
    predictor on the frame upscaled 2x: half-pixel landmarks, as small faces need.
    """
    import dlib

    detector, predictor = dlib.get_frontal_face_detector(), _shape_predictor()
    out = []
    for frame in frames:
        rgb = _array_to_rgb(frame)
        big = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
        faces = [dlib.rectangle(r.left() * 2, r.top() * 2, r.right() * 2, r.bottom() * 2) for r in detector(rgb, 0)]
        faces = faces or list(detector(big, 0))
        if not faces:
            out.append(np.full((68, 2), np.nan))
            continue
        shape = predictor(big, max(faces, key=lambda r: r.area()))
        out.append((np.array([(p.x, p.y) for p in shape.parts()], float) + 0.5) / 2 - 0.5)
    return np.array(out).reshape(-1, 68, 2)


# command line


def main(argv: list[str] | None = None) -> None:
    """Align the largest face of a photo and save the crop, at twice its size, with its landmarks."""
    from talkface.heatmaps import draw_landmarks

    parser = argparse.ArgumentParser(prog="python -m talkface.face", description=main.__doc__)
    parser.add_argument("photo", help="a photo with a face")
    parser.add_argument("--out", default="landmarks.png", help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        image = load_image(args.photo)
        start = time.perf_counter()
        face = align_face(image)
        ms = (time.perf_counter() - start) * 1000
    except FaceError as exc:
        raise SystemExit(str(exc)) from None
    big = cv2.resize(face.image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    PIL.Image.fromarray(draw_landmarks(big, face.landmarks * 2 + 0.5)).save(args.out)
    print(
        f"{face.num_faces} face(s) found; the largest, {face.box.width:.0f} px wide, aligned in {ms:.0f} ms "
        f"(first call includes loading the models); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
