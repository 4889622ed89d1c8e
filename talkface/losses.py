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


def temporal_residual_loss(estimator: nn.Module, mfcc: torch.Tensor, pred_landmarks: torch.Tensor) -> torch.Tensor:
    """L_tr = −MI(audio residuals; predicted-landmark residuals), DV bound of the frozen estimator.

    Gradients reach the predicted landmarks through both the joint and the marginal term; the audio is a
    given, so nothing flows into it.
    """
    _require_frozen(estimator)
    t_joint, t_marginal = estimator(mfcc.detach(), pred_landmarks)
    mi, _, _ = mine_lower_bound(t_joint, t_marginal)
    return -mi
