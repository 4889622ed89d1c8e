"""Training losses, named as in the paper.

A2L (§III-A): L = L_rec + λ_wd L_wd + λ_tr L_tr, all on landmarks in the normalised frame of
`talkface.face.normalise_landmarks`. The judges (word detector, MI estimator) must be frozen
(`talkface.training.freeze`): the losses check it, since a judge that learns along would simply
learn to approve of whatever the predictor produces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkface.models.mi_estimator import mine_lower_bound

# A2L losses

WORD_FRAMES = 25  # the word detector sees the centre 25 of LRW's 29 frames, as in the paper


def _require_frozen(judge: nn.Module) -> None:
    if judge.training or any(p.requires_grad for p in judge.parameters()):
        raise ValueError(f"{type(judge).__name__} must be frozen (talkface.training.freeze) before judging predictions")


def landmark_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_rec: squared Euclidean distance per landmark, averaged over batch, frames and points.

    Squared, because that is the usual reading of the paper's L2 and gives gradients proportional to the
    error (smooth near the optimum, unlike the plain distance whose gradient has unit length everywhere);
    per-point distances summed over x and y, then averaged, so the value does not depend on T or K.
    """
    return (pred - target).pow(2).sum(dim=-1).mean()


def velocity_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(ours) L_rec on the frame-to-frame motion of (B, T, K, 2) landmarks: L2 on positions alone lets a predictor
    average a fast gesture (a /p/ closure, an opening) into a smaller, slower one; this term asks for the motion
    itself. An experiment (train_a2l.py --lambda-vel), not part of the paper's loss or the shipped recipes."""
    return landmark_l2(pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1])


def centre_frames(sequence: torch.Tensor, frames: int = WORD_FRAMES) -> torch.Tensor:
    """The centre `frames` steps of a (B, T, ...) sequence (where LRW puts the word)."""
    start = (sequence.shape[1] - frames) // 2
    if start < 0:
        raise ValueError(f"need at least {frames} frames, got {sequence.shape[1]}")
    return sequence[:, start : start + frames]


def word_loss(detector: nn.Module, pred_landmarks: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """L_wd: cross-entropy of the frozen word detector on the centre 25 predicted frames vs the word."""
    _require_frozen(detector)
    return F.cross_entropy(detector(centre_frames(pred_landmarks)), words)


def temporal_residual_loss(estimator: nn.Module, mfcc: torch.Tensor, pred_landmarks: torch.Tensor,
                           true_landmarks: torch.Tensor | None = None) -> torch.Tensor:
    """L_tr = −MI(audio residuals; predicted-landmark residuals), DV bound of the frozen estimator.

    Gradients reach the predicted landmarks through both the joint and the marginal term; the audio is a
    given, so nothing flows into it. With `true_landmarks` (ours, not the paper's) the loss is hinged at the
    ground truth's own estimate, max(0, MI_true − MI_pred): a frozen estimator can be fooled — the predictor
    learns motions it scores far above real speech (12 nats against 2–3 on our corpus) at the cost of
    landmark error — and the hinge stops rewarding synchrony beyond what real landmarks show.
    """
    _require_frozen(estimator)
    t_joint, t_marginal = estimator(mfcc.detach(), pred_landmarks)
    mi, _, _ = mine_lower_bound(t_joint, t_marginal)
    if true_landmarks is None:
        return -mi
    with torch.no_grad():
        target, _, _ = mine_lower_bound(*estimator(mfcc, true_landmarks))
    return torch.relu(target - mi)


# L2F losses (§III-B): L = λ_L1 L1(frame) + λ_lip L1(lip crop) + λ_adv L_GAN


def frame_l1(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L1 between generated and real frames, averaged over pixels (pix2pix's reconstruction term)."""
    return F.l1_loss(fake, real)


def lip_box(lip_landmarks: torch.Tensor, image_size: int, margin: float = 0.15) -> torch.Tensor:
    """The square box around the lips as (B, 2, 3) ``affine_grid`` matrices (centre, half-side).

    Square, so the crop keeps the mouth's aspect; its side is the lips' larger extent plus
    ``margin`` of it on each side. Landmarks are pixel coordinates with pixel centres at
    integers (as dlib and ``talkface.heatmaps``); min/max keep the box differentiable in them.
    """
    lo, hi = lip_landmarks.amin(dim=1), lip_landmarks.amax(dim=1)  # (B, 2)
    half = (hi - lo).amax(dim=1) * (0.5 + margin)  # (B,)
    centre = (lo + hi + 1) / image_size - 1  # pixel → [-1, 1] with align_corners=False
    scale = 2 * half / image_size
    zero = torch.zeros_like(scale)
    return torch.stack([torch.stack([scale, zero, centre[:, 0]], dim=1),
                        torch.stack([zero, scale, centre[:, 1]], dim=1)], dim=1)


def crop_lips(images: torch.Tensor, lip_landmarks: torch.Tensor, size: int = 64,
              margin: float = 0.15) -> torch.Tensor:
    """Differentiable lip crop: (B, C, H, W) square images → (B, C, size, size) around the lip box."""
    theta = lip_box(lip_landmarks.to(images.dtype), images.shape[-1], margin)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def lip_crop_l1(fake: torch.Tensor, real: torch.Tensor, lip_landmarks: torch.Tensor, size: int = 64,
                margin: float = 0.15) -> torch.Tensor:
    """The paper's adaptive reconstruction term: L1 on the lip region only, found by the lip landmarks.

    The whole-frame L1 is dominated by the large static face; this term gives the mouth, small
    but what the viewer watches, a loss of its own. ``lip_landmarks`` (B, K, 2) are usually
    points 48-67 (``talkface.face.MOUTH``) of the target landmarks; gradients reach them too.
    """
    return F.l1_loss(crop_lips(fake, lip_landmarks, size, margin), crop_lips(real, lip_landmarks, size, margin))


class GANLoss(nn.Module):
    """Adversarial loss on discriminator logits, as junyanz's pix2pix ``GANLoss``.

    ``lsgan``: least squares towards 1 (real) / 0 (fake), pix2pix's default and stable.
    ``hinge``: D gets max(0, 1 ∓ logit), G gets −logit (``for_discriminator=False``).
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in ("lsgan", "hinge"):
            raise ValueError(f"GAN mode must be 'lsgan' or 'hinge', got {mode!r}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        if self.mode == "lsgan":
            return F.mse_loss(logits, torch.full_like(logits, 1.0 if target_is_real else 0.0))
        if not for_discriminator:
            return -logits.mean()
        return F.relu(1 - logits).mean() if target_is_real else F.relu(1 + logits).mean()
