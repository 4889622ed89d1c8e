"""Est_m, the mutual-information estimator (paper §III-A, after MINE, Belghazi et al. 2018).

It measures how much the frame-to-frame change of the audio tells about the frame-to-frame change of
the landmarks. A statistics network T(a, l) scores a pair of residual sequences; the Donsker–Varadhan
bound  I(A; L) ≥ E_P[T] − log E_Q[e^T]  turns those scores into an MI estimate, where P are matching
(audio, landmark) pairs and Q the product of marginals, sampled by pairing each clip's audio with
another clip's landmarks **(ours: the paper's equations show only the joint term)**. Trained on
ground truth, then frozen: L_tr = −MI(audio, predicted landmarks) rewards landmarks that move when,
and as, the audio changes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# helpers


def residuals(sequence: torch.Tensor) -> torch.Tensor:
    """x_{t+1} − x_t over dim 1, flattened per step: (B, T, ...) → (B, T−1, features)."""
    return torch.diff(sequence, dim=1).flatten(2)


def shifted(x: torch.Tensor, shift: int | None = None) -> torch.Tensor:
    """Roll the batch by `shift` (random in 1..B−1 if None): every clip gets another clip's partner.

    A roll rather than a random permutation guarantees no clip keeps its own partner, so the marginal
    sample never contains joint pairs, even for tiny batches.
    """
    b = x.shape[0]
    if shift is None:
        shift = int(torch.randint(1, b, ()).item()) if b > 1 else 0
    return torch.roll(x, shifts=shift, dims=0)


def mine_lower_bound(
    t_joint: torch.Tensor,
    t_marginal: torch.Tensor,
    ema: torch.Tensor | None = None,
    ema_rate: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Donsker–Varadhan MI estimate with MINE's bias-corrected gradient.

    Returns (mi_estimate, loss_for_backward, new_ema). `mi_estimate` = mean(t_joint) − log mean(e^t_marginal),
    differentiable (what L_tr uses). Its minibatch gradient is biased, because the log term's gradient is
    ∇E[e^T] / E[e^T] with the denominator estimated from the same small batch; MINE replaces that
    denominator by a running mean `ema` of E_Q[e^T], which is what `loss_for_backward` does (minimising it
    maximises the bound). Pass the returned `new_ema` back in at the next step.
    """
    log_mean_exp = torch.logsumexp(t_marginal.flatten(), dim=0) - math.log(t_marginal.numel())
    mi = t_joint.mean() - log_mean_exp
    mean_exp = log_mean_exp.exp()
    batch_mean = mean_exp.detach()
    new_ema = batch_mean if ema is None else (1.0 - ema_rate) * ema.to(batch_mean) + ema_rate * batch_mean
    loss = -(t_joint.mean() - mean_exp / new_ema)
    return mi, loss, new_ema


# classes


class MIEstimator(nn.Module):
    """Statistics network T(a, l): two streams, three convolution layers, two fully connected layers.

    Audio stream: residuals of the flattened MFCC windows; landmark stream: residuals of the 68×2
    normalised landmarks. Each is standardised (batch norm over the ground truth) and convolved over time
    on its own (layer 1), then the two are concatenated and convolved jointly (layers 2 and 3), so T can
    compare audio and landmark change at the same moments (temporal synchrony, not just global statistics);
    the result is averaged over time and two FC layers give one score per clip.
    """

    def __init__(self, n_mfcc: int = 12, window: int = 28, n_points: int = 68, hidden: int = 128, kernel: int = 3):
        super().__init__()
        self.init_kwargs = dict(n_mfcc=n_mfcc, window=window, n_points=n_points, hidden=hidden, kernel=kernel)
        pad = kernel // 2
        audio_features, landmark_features = n_mfcc * window, n_points * 2
        self.audio_stream = nn.Sequential(
            nn.BatchNorm1d(audio_features), nn.Conv1d(audio_features, hidden, kernel, padding=pad), nn.ELU()
        )
        self.landmark_stream = nn.Sequential(
            nn.BatchNorm1d(landmark_features),
            nn.Conv1d(landmark_features, hidden, kernel, padding=pad),
            nn.ELU(),
        )
        self.joint = nn.Sequential(
            nn.Conv1d(2 * hidden, hidden, kernel, padding=pad),
            nn.ELU(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.ELU(),
        )
        self.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1))

    def encode(self, mfcc: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stream features (B, hidden, T−1) of the audio and landmark residuals."""
        audio = self.audio_stream(residuals(mfcc).transpose(1, 2))
        motion = self.landmark_stream(residuals(landmarks).transpose(1, 2))
        return audio, motion

    def score(self, audio: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """T for paired stream features → (B,)."""
        joint = self.joint(torch.cat([audio, motion], dim=1)).mean(dim=2)
        return self.fc(joint).squeeze(1)

    def statistic(self, mfcc: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """T(a, l) of each clip's own pair: mfcc (B,T,window,n_mfcc), landmarks (B,T,68,2) → (B,)."""
        return self.score(*self.encode(mfcc, landmarks))

    def forward(
        self, mfcc: torch.Tensor, landmarks: torch.Tensor, shift: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(t_joint, t_marginal), each (B,): the true pairs, and mismatched pairs (see `shifted`).

        Both come from one call (each stream encoded once), which is also what DDP needs.
        """
        audio, motion = self.encode(mfcc, landmarks)
        return self.score(audio, motion), self.score(audio, shifted(motion, shift))
