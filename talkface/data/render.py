"""Frames of the synthetic corpus: a real face photo warped to each frame's landmarks.

The photo is cut into triangles (Delaunay over its 68 landmarks, a ring of anchors around the face
that follows the head, and points on the image border that stay put, so the background does not
move). Each frame is one ``cv2.remap`` of the photo through a dense backward map that is affine on
each triangle: the triangle index of every pixel is rasterised once per frame, then every pixel
looks up its triangle's affine map. Where the lips part, the mouth is painted: a dark cavity in the
lips' own colour, upper teeth fixed to the skull (the upper lip slides over them), lower teeth and
tongue when the jaw drops far, all blended through a feathered mask so no polygon edge shows.

``python -m talkface.data.render`` renders a test clip, prints the time per frame and can write a
contact sheet to look at.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np

from talkface.data.articulation import MouthParams, apply_mouth
from talkface.face import inter_ocular

_STABLE = [*range(27, 36), 36, 39, 42, 45]  # nose and eye corners: still while speaking
_INNER = list(range(60, 68))
_UPPER_INNER = [60, 61, 62, 63, 64]
_LOWER_INNER = [60, 67, 66, 65, 64]
_SUB = 16  # sub-pixel precision of the rasteriser (cv2 "shift" of 4 bits)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 similarity mapping points ``src`` onto ``dst`` (closed form in 2D)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    dot = (a * b).sum()
    cross = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()
    norm = (a**2).sum()
    c, s = dot / norm, cross / norm
    rot = np.array([[c, -s], [s, c]])
    return np.concatenate([rot, (md - rot @ ms)[:, None]], axis=1)


def _ring(landmarks: np.ndarray) -> np.ndarray:
    """Anchors around the face: below the jaw with room for the chin to drop, beside the cheeks, and
    over the forehead. They carry the head's motion but none of the mouth's."""
    iod = float(inter_ocular(landmarks))
    centre = landmarks[27:36].mean(0)
    jaw = landmarks[0:17]
    out = jaw - centre
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    clearance = np.where(np.abs(np.arange(17) - 8) <= 4, 0.6, 0.35) * iod
    around = jaw + out * clearance[:, None]
    up = landmarks[27] - landmarks[30]
    up /= np.linalg.norm(up)
    forehead = landmarks[17:27] + up * 0.9 * iod
    return np.concatenate([around, forehead])


@functools.lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel's (x, y), float32 (height, width) each: made once per frame size (read-only)."""
    x, y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _border(height: int, width: int, per_side: int = 6) -> np.ndarray:
    """Points just outside the image edges, which never move."""
    xs, ys = np.linspace(-1.0, width, per_side + 1), np.linspace(-1.0, height, per_side + 1)[1:-1]
    return np.concatenate([np.stack([xs, np.full_like(xs, -1.0)], 1), np.stack([xs, np.full_like(xs, height)], 1),
                           np.stack([np.full_like(ys, -1.0), ys], 1), np.stack([np.full_like(ys, width), ys], 1)])


def qhull_delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (F, 3) of points (N, 2), by Qhull (scipy): the synthetic corpus's meshes."""
    from scipy.spatial import Delaunay  # here: 0.3 s to import, which the app's start does without

    return Delaunay(points).simplices


def opencv_delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (F, 3) of points (N, 2), by OpenCV, without importing scipy (0.3 s of the app's first
    video: ``blink_frame``). For an aligned face's mesh the same triangles as Qhull's, in another order; where
    landmarks come near or past the frame's edge the two may differ there (cocircular border points split the
    other way, or a triangle left out), never at the eyes."""
    points = np.asarray(points, np.float32)
    lo = np.floor(points.min(0)) - 1
    size = np.ceil(points.max(0) - lo) + 2
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(size[0]), int(size[1])))
    subdiv.insert([(float(x), float(y)) for x, y in points])
    index = {(float(x), float(y)): i for i, (x, y) in enumerate(points)}
    corners = subdiv.getTriangleList().reshape(-1, 3, 2).tolist()
    # triangles with one of the subdivision's own outer vertices are not the points' own
    return np.array([[index[tuple(c)] for c in triangle] for triangle in corners
                     if all(tuple(c) in index for c in triangle)], np.int64).reshape(-1, 3)


class FaceMesh:
    """The triangulation of one face photo, built once and reused for all its frames."""

    def __init__(self, ref_landmarks: np.ndarray, shape: tuple[int, int] = (256, 256),
                 delaunay: Callable[[np.ndarray], np.ndarray] = qhull_delaunay):
        ref = np.asarray(ref_landmarks, dtype=np.float64)
        self.shape = shape
        h, w = shape
        ring = _ring(ref)
        # anchors well inside the image only: near the edge they would crowd the border points
        self.ring = ring[np.all((ring > 6) & (ring < [w - 7, h - 7]), axis=1)]
        self.border = _border(h, w)
        self.src = np.concatenate([ref, self.ring, self.border])
        # triangulate a wide-open mouth, so the mouth's triangles stay valid for every opening
        opened = apply_mouth(ref, MouthParams.from_array(np.array([[0.9, 0, 0, 0, 0, 0]])))[0]
        tri = delaunay(np.concatenate([opened, self.ring, self.border]))
        inside = np.all((tri >= 60) & (tri < 68), axis=1)
        # cavity triangles first: when the lips close they collapse and the lips are drawn over them
        self.triangles = np.concatenate([tri[inside], tri[~inside]]).astype(np.int32)
        self._x, self._y = _pixel_grid(h, w)

    def frame_points(self, landmarks: np.ndarray) -> np.ndarray:
        """Where the mesh's vertices go in a frame with these 68 landmarks."""
        head = _similarity(self.src[_STABLE], landmarks[_STABLE])
        ring = self.ring @ head[:, :2].T + head[:, 2]
        return np.concatenate([landmarks, ring, self.border])

    def backward_map(self, points: np.ndarray, box: tuple[int, int, int, int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Dense map (x, y) such that frame pixel (i, j) samples the photo at (x[i, j], y[i, j]); with `box`
        (x0, y0, x1, y1), of that part of the frame only (i - y0, j - x0): where a few points move (a blink)."""
        x0, y0, x1, y1 = box or (0, 0, self.shape[1], self.shape[0])
        dst, src = points[self.triangles], self.src[self.triangles]  # (F, 3, 2)
        # per triangle, the affine map frame -> photo: L (2x2) = S D^-1, t = s0 - L d0
        d1, d2 = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
        s1, s2 = src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]
        det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
        longest = np.sqrt(np.maximum.reduce([(d1**2).sum(1), (d2**2).sum(1), ((d2 - d1) ** 2).sum(1)]))
        # a triangle squashed to a sliver (closed lips, closed eyes) would magnify its photo triangle
        # without bound: it is not drawn, its neighbours (the lips, the eyelids) meet over it
        ok = np.abs(det) > 0.5 * np.maximum(longest, 1.0)  # height above half a pixel
        inv = 1.0 / np.where(ok, det, 1.0)
        coef = np.empty((6, len(dst) + 1), np.float32)
        coef[:, 0] = (1, 0, 0, 0, 1, 0)  # identity where nothing is drawn (never, after the fill below)
        l00 = (s1[:, 0] * d2[:, 1] - s2[:, 0] * d1[:, 1]) * inv
        l01 = (s2[:, 0] * d1[:, 0] - s1[:, 0] * d2[:, 0]) * inv
        l10 = (s1[:, 1] * d2[:, 1] - s2[:, 1] * d1[:, 1]) * inv
        l11 = (s2[:, 1] * d1[:, 0] - s1[:, 1] * d2[:, 0]) * inv
        coef[0, 1:], coef[1, 1:], coef[3, 1:], coef[4, 1:] = l00, l01, l10, l11
        coef[2, 1:] = src[:, 0, 0] - l00 * dst[:, 0, 0] - l01 * dst[:, 0, 1]
        coef[5, 1:] = src[:, 0, 1] - l10 * dst[:, 0, 0] - l11 * dst[:, 0, 1]
        index = np.zeros((y1 - y0, x1 - x0), dtype=np.uint16)
        poly = np.round(dst * _SUB).astype(np.int32) - np.array([x0, y0], np.int32) * _SUB
        for f in np.flatnonzero(ok).tolist():
            cv2.fillConvexPoly(index, poly[f], f + 1, shift=4)
        for _ in range(3):  # a pixel left between triangles takes a neighbour's map
            hole = index == 0
            if not hole.any():
                break
            index[hole] = cv2.dilate(index, np.ones((3, 3), np.uint8))[hole]
        index = index.astype(np.intp)
        c = [np.take(coef[k], index) for k in range(6)]
        xs, ys = self._x[y0:y1, x0:x1], self._y[y0:y1, x0:x1]
        map_x, map_y, tmp = c[0] * xs, c[3] * xs, c[1] * ys
        map_x += tmp
        map_x += c[2]
        np.multiply(c[4], ys, out=tmp)
        map_y += tmp
        map_y += c[5]
        return map_x, map_y


# the mouth


def close_photo_mouth(image: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A photo whose mouth is open (teeth, a dark gap) -> the same photo with lip colour there, so
    warping it can close the lips; and the colour of its teeth, if it shows them (else None)."""
    iod = float(inter_ocular(ref))
    if float(np.linalg.norm(ref[66] - ref[62])) < 0.04 * iod:
        return image, None
    # work on the mouth's surroundings only
    margin = int(0.2 * iod) + 4
    x0, y0 = np.maximum(np.floor(ref[48:68].min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(ref[48:68].max(0)).astype(int) + margin, image.shape[1::-1])
    crop, pts = image[y0:y1, x0:x1], ref - [x0, y0]
    outer = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(outer, [np.round(pts[48:60]).astype(np.int32)], 1)
    inner = np.zeros_like(outer)
    cv2.fillPoly(inner, [np.round(pts[60:68]).astype(np.int32)], 1)
    k = max(3, round(0.08 * iod))
    near = cv2.dilate(inner, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    # teeth and the dark gap: pixels near the inner lip whose colour is far from the lips'
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    lip = (outer > 0) & (near == 0)
    if lip.sum() < 20:
        lip = outer > 0
    med = np.median(lab[lip], axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(lab[lip] - med), axis=0), [6.0, 3.0, 3.0])
    far = np.linalg.norm((lab - med) / spread, axis=2) > 3.0
    interior = ((inner > 0) | ((near > 0) & (outer > 0) & far)).astype(np.uint8)
    interior = cv2.dilate(interior, np.ones((3, 3), np.uint8))
    bright = (interior > 0) & (lab[..., 0] > med[0] + 2 * spread[0])
    teeth = np.median(crop[bright], axis=0).astype(np.float64) if bright.sum() > 10 else None
    lip_colour = np.median(crop[lip], axis=0).astype(np.float32)
    # inpainting alone fills with the washed-out average of lips and skin: pull it to the lips' colour
    soft = cv2.GaussianBlur(interior.astype(np.float32), (0, 0), 1.0)[..., None] * 0.6
    closed = cv2.inpaint(crop, interior, 3, cv2.INPAINT_TELEA) * (1 - soft) + lip_colour * soft
    # where the lips meet there is a thin dark line
    line = np.zeros(crop.shape[:2], np.float32)
    cv2.polylines(line, [np.round(pts[[60, 61, 62, 63, 64]] * 4).astype(np.int32)], False, 1.0,
                  max(1, round(0.02 * iod)), cv2.LINE_AA, shift=2)
    line = cv2.GaussianBlur(line, (0, 0), 0.7)[..., None] * 0.35
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(closed * (1 - line) + lip_colour * 0.55 * line + 0.5, 0, 255).astype(np.uint8)
    return out, teeth


class _MouthPainter:
    """Colours and shapes of one face's mouth interior, fixed for a clip."""

    def __init__(self, image: np.ndarray, ref: np.ndarray, teeth: np.ndarray | None,
                 rng: np.random.Generator | None):
        img = image.astype(np.float32)
        self.iod = float(inter_ocular(ref))
        lips = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(lips, [np.round(ref[48:60]).astype(np.int32)], 1)
        cv2.fillPoly(lips, [np.round(ref[60:68]).astype(np.int32)], 0)
        lip = np.median(img[lips > 0], axis=0) if lips.any() else np.array([150.0, 90, 90])
        face = np.zeros(image.shape[:2], np.uint8)
        hull = cv2.convexHull(np.round(ref[np.r_[1:16, 29]]).astype(np.int32))
        cv2.fillConvexPoly(face, hull, 1)
        skin = img[face > 0]
        grey = float(np.abs(skin - skin.mean(1, keepdims=True)).mean()) < 2.0  # a black-and-white photo
        r = rng if rng is not None else np.random.default_rng(0)
        if teeth is None:
            white = float(np.percentile(skin.mean(1), 98))
            tint = np.ones(3) if grey else np.array([1.0, 0.97, 0.9])
            teeth = white * r.uniform(0.8, 0.95) * tint
        self.teeth = np.clip(teeth, 0, 255)
        self.cavity = lip * r.uniform(0.2, 0.3)
        self.tongue = (lip if grey else lip * np.array([1.0, 0.78, 0.8])) * r.uniform(0.4, 0.55)
        down = _down(ref)
        # the upper teeth's edge, fixed to the skull: this far below the closed upper lip's centre
        self.edge = ref[62] + r.uniform(0.05, 0.1) * self.iod * down
        self.width = float(np.linalg.norm(ref[64] - ref[60]))
        self.tooth = r.uniform(0.12, 0.15) * self.iod  # central incisor width

    def paint(self, frame: np.ndarray, landmarks: np.ndarray, head: np.ndarray, teeth: bool) -> None:
        """Paint the mouth interior of one frame in place."""
        inner = landmarks[_INNER]
        down = _down(landmarks)
        gap = float(((landmarks[[67, 66, 65]] - landmarks[[61, 62, 63]]) @ down).max())
        if gap < 0.2:
            return
        x0, y0 = np.maximum(np.floor(inner.min(0)).astype(int) - 3, 0)
        x1, y1 = np.minimum(np.ceil(inner.max(0)).astype(int) + 4, frame.shape[1::-1])
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((inner - [x0, y0]) * 4).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
        # a slit of a pixel or two is only a shadow: fade the interior in as the lips part
        fade = min(1.0, gap / 2.0)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.6)[..., None] * fade

        # mouth-local coordinates: s across from the centre, r down
        u = landmarks[64] - landmarks[60]
        u /= np.linalg.norm(u)
        v = np.array([-u[1], u[0]])
        centre = 0.5 * (landmarks[60] + landmarks[64])
        px, py = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        dx, dy = px - centre[0], py - centre[1]
        s, r = dx * u[0] + dy * u[1], dx * v[0] + dy * v[1]
        y_up = np.interp(s, *_curve(landmarks[_UPPER_INNER], centre, u, v))
        y_lo = np.interp(s, *_curve(landmarks[_LOWER_INNER], centre, u, v))
        half = 0.5 * float(np.linalg.norm(landmarks[64] - landmarks[60]))
        across = np.clip(np.abs(s) / max(half, 1.0), 0.0, 1.0)
        depth = np.clip((r - y_up) / np.maximum(y_lo - y_up, 1.0), 0.0, 1.0)

        # dark cavity: darkest deep in the middle, a little light near the lips and the corners
        colour = self.cavity * (0.75 + 0.5 * (1 - np.sin(np.pi * depth) * (1 - across)))[..., None]
        if teeth:
            arch = np.clip(1.25 - 1.4 * across, 0.0, 1.0)  # the teeth recede into the dark corners
            # tongue: low in the mouth, seen when the jaw drops
            if gap > 0.2 * self.iod:
                top = y_lo - 0.3 * (y_lo - y_up) * (1 - across**2)
                t_alpha = (np.clip(r - top, 0.0, 1.0) * np.clip(1.2 - across, 0, 1))[..., None]
                colour = colour * (1 - t_alpha) + self.tongue * (0.75 + 0.25 * (1 - depth))[..., None] * t_alpha
            # lower teeth: a thin band above the lower lip when it is pulled well down
            show = min(0.3 * (gap - 0.2 * self.iod), 0.06 * self.iod)
            if show > 0.3:
                low = (np.clip(r - (y_lo - show) + 0.5, 0, 1) * np.clip(y_lo - r + 1.0, 0, 1) * arch)[..., None]
                colour = colour * (1 - 0.8 * low) + self.teeth * 0.7 * low * 0.8
            # upper teeth: from the upper lip down to an edge fixed to the skull, arching up to the sides
            edge = (self.edge @ head[:, :2].T + head[:, 2] - centre) @ v - 0.12 * self.iod * across**2
            band = (np.clip(edge - r + 0.5, 0.0, 1.0) * np.clip(r - y_up + 1.5, 0.0, 1.0) * arch)[..., None]
            phase = np.mod(s + 0.5 * self.tooth, self.tooth) - 0.5 * self.tooth
            seams = 1 - 0.1 * np.exp(-(phase**2) / 0.8)
            # the upper lip shades the teeth just below it; little light gets into a narrow opening
            shadow = 0.7 + 0.3 * np.clip((r - y_up) / (0.04 * self.iod), 0.0, 1.0)
            light = 0.8 + 0.2 * min(gap / (0.2 * self.iod), 1.0)
            lit = (1.0 - 0.3 * across**1.5) * seams * shadow * light
            # rounded, protruded lips stand in front of the teeth and shade them
            lit *= np.clip((2 * half / self.width - 0.6) / 0.25, 0.5, 1.0)
            colour = colour * (1 - band) + self.teeth * lit[..., None] * band
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(region * (1 - alpha) + colour * alpha + 0.5, 0, 255).astype(np.uint8)


class _EyelidPainter:
    """Covers what is left of an eye near the end of a blink with the skin around it and a lash
    line: warping alone would show the iris squeezed into a line."""

    def __init__(self, image: np.ndarray, ref: np.ndarray):
        self.eyes = []
        for eye in (list(range(36, 42)), list(range(42, 48))):
            height = float(np.linalg.norm(ref[eye[1:3]] - ref[eye[5:3:-1]], axis=1).mean())
            x0, y0 = np.floor(ref[eye].min(0)).astype(int)
            x1, y1 = np.ceil(ref[eye].max(0)).astype(int) + 1
            patch = image[y0:y1, x0:x1].reshape(-1, 3).astype(np.float32)
            lash = patch[np.argsort(patch.sum(1))[: max(1, len(patch) // 10)]].mean(0)  # the darkest tenth
            self.eyes.append((eye, max(height, 1.0), lash))

    def paint(self, frame: np.ndarray, landmarks: np.ndarray) -> None:
        """Paint the closing eyes of one frame in place."""
        for eye, height, lash in self.eyes:
            now = float(np.linalg.norm(landmarks[eye[1:3]] - landmarks[eye[5:3:-1]], axis=1).mean())
            cover = np.clip((1 - now / height - 0.5) / 0.4, 0.0, 1.0)
            if cover <= 0:
                continue
            pts = landmarks[eye]
            x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 3, 0)
            x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 4, frame.shape[1::-1])
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            local = np.round((pts - [x0, y0]) * 4).astype(np.int32)
            cv2.fillPoly(mask, [local], 255, cv2.LINE_AA, shift=2)
            cv2.polylines(mask, [local], True, 255, 2, cv2.LINE_AA, shift=2)
            alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.8)[..., None] * cover
            lashes = np.zeros_like(mask)
            cv2.polylines(lashes, [local[[0, 5, 4, 3]]], False, 255, 1, cv2.LINE_AA, shift=2)
            beta = cv2.GaussianBlur(lashes.astype(np.float32) / 255, (0, 0), 0.5)[..., None] * cover * 0.6
            region = frame[y0:y1, x0:x1].astype(np.float32)
            lid = region[alpha[..., 0] < 0.02].mean(0)  # the skin around the eye in this frame
            region = region * (1 - alpha) + lid * alpha
            region = region * (1 - beta) + lash * beta
            frame[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def blink_frame(frame: np.ndarray, open_landmarks: np.ndarray, closed_landmarks: np.ndarray) -> np.ndarray:
    """A frame's eyes closed as far as `closed_landmarks` ask, as the corpus renders a blink: the frame warped
    from its open-eyed landmarks to them (``FaceMesh``), then the lids painted over what is left of the eyes.

    Why: L2F does not render blinks (its frames keep the photo's open eyes whatever the eyelid landmarks say:
    dlib's eye aspect ratio on its output never drops; experiments/measure_blinks.py), so the living head's
    blinks are added to its frames afterwards. Only frames with a blink need it.
    """
    mesh = FaceMesh(open_landmarks, shape=frame.shape[:2], delaunay=opencv_delaunay)
    points = mesh.frame_points(np.asarray(closed_landmarks, np.float64))
    # Only the triangles at the lids move (the eye corners, which place the mesh's ring, stay): elsewhere the map
    # is the identity, so only their box is mapped and resampled, the same pixels as the whole frame's map gives
    # there (a sixth of the work at 256²; the box's margin holds the map's hole filling)
    moved = np.flatnonzero(np.abs(points - mesh.src).max(1) > 0)
    out = frame.copy()
    if len(moved):
        corners = points[mesh.triangles[np.isin(mesh.triangles, moved).any(1)]].reshape(-1, 2)
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 4, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 5, (w, h))
        map_x, map_y = mesh.backward_map(points, (x0, y0, x1, y1))
        out[y0:y1, x0:x1] = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    _EyelidPainter(frame, np.asarray(open_landmarks, np.float64)).paint(out, np.asarray(closed_landmarks, np.float64))
    return out


def _down(landmarks: np.ndarray) -> np.ndarray:
    across = landmarks[42:48].mean(0) - landmarks[36:42].mean(0)
    across /= np.linalg.norm(across)
    return np.array([-across[1], across[0]])


def _curve(points: np.ndarray, centre: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = points - centre
    s, r = d @ u, d @ v
    order = np.argsort(s)
    return s[order], r[order]


_PREPARED: OrderedDict = OrderedDict()  # the last few photos' meshes and closed-mouth versions


def _prepare(image: np.ndarray, ref: np.ndarray) -> tuple[FaceMesh, np.ndarray, np.ndarray | None]:
    """The per-photo work, cached: the corpus renders many clips of each identity in a row."""
    key = hashlib.blake2b(image.tobytes() + ref.tobytes() + repr(image.shape).encode(), digest_size=16).digest()
    if key not in _PREPARED:
        mesh = FaceMesh(ref, shape=image.shape[:2])
        closed, teeth = close_photo_mouth(image, ref)
        _PREPARED[key] = (mesh, closed, teeth)
        while len(_PREPARED) > 8:
            _PREPARED.popitem(last=False)
    _PREPARED.move_to_end(key)
    return _PREPARED[key]


def render_frames(
    image: np.ndarray,
    ref_landmarks: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator | None = None,
    teeth: bool = True,
) -> np.ndarray:
    """Warp an aligned face photo (HxWx3 uint8 whose 68 landmarks are ``ref_landmarks``) to each
    frame's landmarks (T, 68, 2) -> (T, H, W, 3) uint8. ``rng`` varies the teeth and mouth colours
    (the same seed gives the same frames); ``teeth=False`` paints an open mouth dark only."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    ref = np.asarray(ref_landmarks, dtype=np.float64)
    frames_lm = np.asarray(landmarks, dtype=np.float64)
    mesh, closed, teeth_colour = _prepare(image, ref)
    painter = _MouthPainter(closed, ref, teeth_colour, rng)
    eyelids = _EyelidPainter(closed, ref)
    out = np.empty((len(frames_lm), *image.shape), dtype=np.uint8)
    for t, lm in enumerate(frames_lm):
        map_x, map_y = mesh.backward_map(mesh.frame_points(lm))
        frame = cv2.remap(closed, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        painter.paint(frame, lm, _similarity(ref[_STABLE], lm[_STABLE]), teeth)
        eyelids.paint(frame, lm)
        out[t] = frame
    return out


def main(argv: list[str] | None = None) -> None:
    """Make the astronaut (or a photo) say a phrase; print the rendering time, write a contact sheet."""
    import PIL.Image
    import skimage.data

    from talkface.data.articulation import animate
    from talkface.data.speech import Espeak
    from talkface.face import align_face, load_image
    from talkface.heatmaps import draw_landmarks
    from talkface.video import contact_sheet

    parser = argparse.ArgumentParser(prog="python -m talkface.data.render", description=main.__doc__)
    parser.add_argument("--photo", help="a face photo (default: skimage's astronaut)")
    parser.add_argument("--text", default="they said people again", help="what the face says")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", help="write a contact sheet PNG of 20 frames here")
    args = parser.parse_args(argv)

    face = align_face(load_image(args.photo) if args.photo else skimage.data.astronaut())
    utt = Espeak().synthesize(args.text)
    num_frames = int(utt.duration * 25)
    rng = np.random.default_rng(args.seed)
    motion = animate(face.landmarks, utt.phones, num_frames, rng)
    render_frames(face.image, face.landmarks, motion["landmarks"][:2], rng=rng)  # per-photo setup
    wall, cpu = time.perf_counter(), time.process_time()
    frames = render_frames(face.image, face.landmarks, motion["landmarks"], rng=rng)
    wall, cpu = [(now - then) * 1000 / num_frames for now, then in ((time.perf_counter(), wall),
                                                                     (time.process_time(), cpu))]
    print(f"{num_frames} frames: {cpu:.2f} ms CPU, {wall:.2f} ms wall per frame "
          f"(per-photo setup excluded; cv2 threads: {cv2.getNumThreads()})")
    if args.sheet:
        first = max(0, num_frames // 2 - 10)
        picked = range(first, min(first + 20, num_frames))
        marked = [draw_landmarks(frames[t], motion["landmarks"][t]) for t in picked]
        rows = [[frames[t] for t in picked[:10]], [frames[t] for t in picked[10:]], marked[:10]]
        PIL.Image.fromarray(contact_sheet(rows)).save(args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
