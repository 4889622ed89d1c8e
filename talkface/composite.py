"""Paste-back: each generated 256² face crop goes back into the whole photo, at the photo's own resolution.

The aligned crop came out of the photo through a similarity (``AlignedFace.transform``); its inverse puts the
generated face back, blended by a feathered mask over what moves: the lower face and jaw when the head is still,
the whole face (eyes, brows) when it blinks and moves. Outside the mask every pixel is the photo's, exactly.

    paste = PasteBack(aligned, max_side=1280, region="lower")
    frame = paste(generated_crop, landmarks)   # (H, W, 3) uint8, H and W even (H.264)
    planes = paste(generated_crop, landmarks, yuv=True)   # (3H/2, W) I420, what the encoder takes

Only the rectangle the crop covers is touched per frame, so the cost grows with the face's size in the output,
not with the photo's. Sizes: the long side is capped at ``max_side`` (never enlarged); H.264 (yuv420p) needs
even sizes, so an odd width or height loses its last column or row.
"""

from __future__ import annotations

import functools
from typing import Literal

import cv2
import numpy as np

from talkface.face import CROP_SIZE, JAW, LEFT_BROW, NOSE, RIGHT_BROW, AlignedFace, inter_ocular

Region = Literal["lower", "face"]
MAX_SIDE = 1280
_BORDER = 12  # crop pixels: the mask is zero this close to the crop's edge, so no box edge can show


def _polygons(landmarks: np.ndarray, region: Region) -> np.ndarray:
    """The outline of what moves, in crop pixels (..., N, 2) for landmarks (..., 68, 2): jaw line closed below the
    eyes across the middle of the nose ("lower"), or the jaw line closed over the brows, raised a little for the
    forehead ("face"). Batched: a whole video's frames in one call (``PasteBack._crop_bounds``)."""
    landmarks = np.asarray(landmarks)
    if region == "lower":
        return landmarks[..., [*JAW[1:16], NOSE[2]], :]
    brows = landmarks[..., [*LEFT_BROW[::-1], *RIGHT_BROW[::-1]], :]
    lift = 0.25 * inter_ocular(landmarks).astype(np.float64)[..., None]
    raised = np.stack([brows[..., 0].astype(np.float64), brows[..., 1] - lift], -1)
    return np.concatenate([landmarks[..., JAW, :], raised], axis=-2)


def face_mask(landmarks: list[np.ndarray], region: Region = "lower", size: int = CROP_SIZE) -> np.ndarray:
    """(size, size) float32 in [0, 1]: the union of the regions of every landmark set (the photo's and the
    frame's, so that where the chin was and where it is now are both covered), grown and feathered by a
    fraction of the inter-ocular distance, and zero near the crop's edge."""
    outlines = [_outline(points, region) for points in landmarks]
    return _feathered(outlines, float(inter_ocular(landmarks[0])), size) * _border_ramp(size)


def _outline(landmarks: np.ndarray, region: Region) -> np.ndarray:
    """The region's polygon as cv2.fillPoly takes it with shift=2 (quarter pixels)."""
    return np.round(_polygons(landmarks, region) * 4).astype(np.int32)


def _feathered(outlines: list[np.ndarray], iod: float, size: int) -> np.ndarray:
    """``face_mask`` before its border ramp (float32), from the regions' outlines (``_outline``)."""
    mask = np.zeros((size, size), np.uint8)
    for outline in outlines:  # one at a time: polygons given together would cut holes where they overlap
        cv2.fillPoly(mask, [outline], 255, cv2.LINE_AA, shift=2)
    grow = max(1, round(0.10 * iod))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return cv2.GaussianBlur(mask.astype(np.float32) * np.float32(1 / 255), (0, 0), sigmaX=0.12 * iod)


@functools.lru_cache(maxsize=8)
def _border_ramp(size: int) -> np.ndarray:
    """(size, size) float32: 0 within ``_BORDER`` crop pixels of the edge, rising to 1 over as many again."""
    border = _BORDER * size / CROP_SIZE
    ramp = np.clip((np.minimum(np.arange(size), np.arange(size)[::-1]) - border) / border, 0, 1)
    ramp = np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)
    ramp.flags.writeable = False
    return ramp


def output_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int, float]:
    """The whole-photo video's (width, height) and the photo's scale: long side at most `max_side`, never
    enlarged, each side even (an odd one loses its last pixel)."""
    if max_side < 2:
        raise ValueError(f"max_side must be at least 2, not {max_side}")
    k = min(1.0, max_side / max(width, height))
    w, h = max(2, round(width * k)), max(2, round(height * k))
    return w - w % 2, h - h % 2, k


class PasteBack:
    """Generated crops -> frames of the whole photo (see the module's docstring).

    `rest` (optional) is the generator's frame for the photo's own landmarks: its difference from the real
    crop, low-passed, is the generator's colour cast on this face, removed from every frame so that no colour
    step shows where the mask fades out. `extent` (optional, (T, 68, 2) crop pixels): every frame's landmarks,
    known before generation (or those known then, the rest added with ``include`` as they come); they bound the
    part of the output that can change, which is then all each frame touches (a big face in a big photo costs a
    fraction of the whole crop's footprint).
    """

    def __init__(self, aligned: AlignedFace, max_side: int = MAX_SIDE, region: Region = "lower",
                 rest: np.ndarray | None = None, extent: np.ndarray | None = None):
        if aligned.photo is None:
            raise ValueError("this AlignedFace does not carry its photo; align it with talkface.face.align_face")
        photo = aligned.photo
        self.width, self.height, k = output_size(photo.shape[1], photo.shape[0], max_side)
        self.region: Region = region
        self.size = aligned.image.shape[0]
        self._reference = np.asarray(aligned.landmarks, np.float32)
        scaled = photo if k == 1 else cv2.resize(photo, (round(photo.shape[1] * k), round(photo.shape[0] * k)),
                                                 interpolation=cv2.INTER_AREA)
        self.background = np.ascontiguousarray(scaled[: self.height, : self.width])
        # output pixel -> photo pixel (pixel centres on integers in both) -> crop pixel
        to_photo = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5], [0, 0, 1]])
        to_crop = np.asarray(aligned.transform, np.float64) @ to_photo  # (2, 3)
        self._to_crop = to_crop
        self._crop4 = np.zeros((self.size, self.size, 4), np.uint8)
        self._out = self.background.copy()
        self._yuv = cv2.cvtColor(self.background, cv2.COLOR_RGB2YUV_I420)
        self._planes = _i420_planes(self._yuv, self.height, self.width)
        self._bounds = self._crop_bounds(extent)
        self._set_roi(*self._bounds)
        half_reference = _half_size(self._reference)
        self._reference_outline = _outline(half_reference, region)
        self._half_iod = float(inter_ocular(half_reference))
        self._cast = None
        if rest is not None:
            diff = aligned.image.astype(np.float32) - rest.astype(np.float32)
            cast = np.round(cv2.GaussianBlur(diff, (0, 0), sigmaX=0.25 * float(inter_ocular(self._reference))))
            # as two saturating 8-bit images, added and subtracted (OpenCV's fastest arithmetic), alpha untouched
            up, down = (np.clip(sign * cast, 0, 255).astype(np.uint8) for sign in (1, -1))
            self._cast = tuple(cv2.cvtColor(c, cv2.COLOR_RGB2RGBA) * np.array([1, 1, 1, 0], np.uint8)
                               for c in (up, down))

    def include(self, landmarks: np.ndarray) -> None:
        """Grow the part of the output that frames touch to take in frames with these landmarks ((N, 68, 2) crop
        pixels) too: for frames not known when this was made (a video streamed while A2L still runs). The output
        is the same as with them in `extent` from the start: outside the part touched every frame is the photo."""
        lo, hi = self._crop_bounds(landmarks)
        if (lo >= self._bounds[0]).all() and (hi <= self._bounds[1]).all():
            return
        self._bounds = (np.minimum(lo, self._bounds[0]), np.maximum(hi, self._bounds[1]))
        self._set_roi(*self._bounds)

    def _set_roi(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """The output's region of interest: the box over the crop-pixel box (lo, hi), and what each frame's warp
        and blend there need, made once."""
        to_crop = self._to_crop
        inverse = cv2.invertAffineTransform(to_crop)
        corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]], np.float64)
        out_corners = corners @ inverse[:, :2].T + inverse[:, 2]
        x0, y0 = np.floor(out_corners.min(0)).astype(int) - 1
        x1, y1 = np.ceil(out_corners.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(self.width, x1), min(self.height, y1)
        # even corners: the ROI is converted to I420 on its own, whose 2x2 chroma blocks then line up with the
        # whole frame's (the sizes are even)
        x0, y0, x1, y1 = x0 - x0 % 2, y0 - y0 % 2, min(self.width, x1 + x1 % 2), min(self.height, y1 + y1 % 2)
        roi = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
        if getattr(self, "roi", None) == roi:
            return  # grown by less than a pixel
        self.roi = roi
        self._roi_shape = (x1 - x0, y1 - y0)
        # Each frame warps its face and its blending weight together, as one 4-channel image (RGB + alpha): one
        # resampling pass, and OpenCV's 4-channel path is faster than its 3-channel one alone. The transform is
        # the same for every frame, so its per-pixel source coordinates are computed once, in fixed point, from
        # the output's own pixel positions (a grown ROI samples each pixel exactly as before).
        self._maps = self._alpha4 = self._background4 = None  # an empty ROI (the face off the output) needs none
        if x1 > x0 and y1 > y0:
            xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
            (a, b, c), (d, e, f) = to_crop
            self._maps = cv2.convertMaps((a * xs + b * ys + c).astype(np.float32),
                                         (d * xs + e * ys + f).astype(np.float32), cv2.CV_16SC2)
            self._alpha4 = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
            self._background4 = cv2.cvtColor(self.background[self.roi], cv2.COLOR_RGB2RGBA)
        self._roi_even = (y0, x0, y1 - y0, x1 - x0)

    def _crop_bounds(self, extent: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The crop-pixel box outside which every frame's mask is zero: the regions' outlines, grown by the
        mask's dilation and three feather widths (the whole crop when the frames are not known)."""
        if extent is None:
            return np.array([-0.5, -0.5]), np.array([self.size - 0.5, self.size - 0.5])
        frames = np.asarray(extent).reshape(-1, 68, 2)  # all frames at once (none: the photo's alone)
        points = np.concatenate([_polygons(self._reference, self.region),
                                 _polygons(frames, self.region).reshape(-1, 2)])
        margin = (0.10 + 3 * 0.12) * float(inter_ocular(self._reference)) + 2
        return (np.clip(points.min(0) - margin, -0.5, self.size - 0.5),
                np.clip(points.max(0) + margin, -0.5, self.size - 0.5))

    def _crop_alpha(self, landmarks: np.ndarray) -> np.ndarray:
        """The 8-bit blending weight over the crop (S, S) for a frame with these landmarks (crop pixels): the
        mask is smooth, so drawn at half the crop's size (a quarter of the cost; the photo's outline made once),
        then resampled."""
        half = self.size // 2
        outline = _outline(_half_size(np.asarray(landmarks, np.float32)), self.region)
        mask = _feathered([self._reference_outline, outline], self._half_iod, half)
        alpha = cv2.multiply(mask, _border_ramp(half), scale=255, dtype=cv2.CV_8U)
        return cv2.resize(alpha, (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def alpha(self, landmarks: np.ndarray) -> np.ndarray:
        """The 8-bit blending weight of the generated face over the output's ROI (`self.roi`) for a frame: the
        same values ``__call__`` warps with the face, as its fourth channel."""
        if self._maps is None:
            return np.zeros((0, 0), np.uint8)
        return cv2.remap(self._crop_alpha(landmarks), *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def __call__(self, frame: np.ndarray, landmarks: np.ndarray, yuv: bool = False) -> np.ndarray:
        """One generated crop (S, S, 3) uint8 and its landmarks (68, 2) crop pixels -> the whole frame
        (height, width, 3) uint8 RGB, or with `yuv` its I420 planes (height × 3/2, width), converted where the
        face changed only (what ``VideoWriter.write`` takes as it is). The returned array is reused by the next
        call: write it out before then."""
        if self._roi_shape[0] <= 0 or self._roi_shape[1] <= 0:
            return self._yuv if yuv else self._out
        if frame.shape[0] != self.size:  # a generator that draws smaller frames than the aligned crop
            frame = cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        # face and alpha as one RGBA crop, warped together; 8-bit alpha and blend: OpenCV's fastest paths (about
        # twice as fast as float at 1280 px). Where alpha is 0 (beyond the feather) the result is the photo's
        # pixel exactly, where it is 255 the generated one.
        crop = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2RGBA, dst=self._crop4)
        if self._cast is not None:  # the generator's colour cast on this face, removed (saturating)
            cv2.subtract(cv2.add(crop, self._cast[0], dst=crop), self._cast[1], dst=crop)
        cv2.mixChannels([self._crop_alpha(landmarks)], [crop], [0, 3])
        face = cv2.remap(crop, *self._maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.cvtColor(cv2.extractChannel(face, 3), cv2.COLOR_GRAY2RGBA, dst=self._alpha4)  # its A: 255
        blended = cv2.add(cv2.multiply(face, alpha, scale=1 / 255),
                          cv2.multiply(self._background4, cv2.bitwise_not(alpha), scale=1 / 255))
        if not yuv:
            self._out[self.roi] = cv2.cvtColor(blended, cv2.COLOR_RGBA2RGB)
            return self._out
        y0, x0, h, w = self._roi_even
        roi = _i420_planes(cv2.cvtColor(blended, cv2.COLOR_RGBA2YUV_I420), h, w)
        planes = self._planes
        planes[0][y0 : y0 + h, x0 : x0 + w] = roi[0]
        for full, part in zip(planes[1:], roi[1:]):
            full[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] = part
        return self._yuv


def _half_size(points: np.ndarray) -> np.ndarray:
    """Crop pixels -> pixels of a half-size crop (pixel centres on integers in both)."""
    return (points + 0.5) * 0.5 - 0.5


def _i420_planes(i420: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (height, width), U and V (height/2, width/2) planes of OpenCV's (3·height/2, width) I420."""
    flat = i420.reshape(-1)
    n, q = height * width, height * width // 4
    return (flat[:n].reshape(height, width), flat[n : n + q].reshape(height // 2, width // 2),
            flat[n + q : n + 2 * q].reshape(height // 2, width // 2))
