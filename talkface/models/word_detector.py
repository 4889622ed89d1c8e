"""Det_w, the word detector (paper §III-A): which of the 500 words does a 25-frame landmark sequence say?

An LSTM and two fully connected layers, as in the paper. Trained on ground-truth landmarks, then frozen
and used as a judge: the cross-entropy of its verdict on *predicted* landmarks (L_wd) pushes the A2L
predictor toward mouth shapes that carry the word, not just the average mouth.
"""

from __future__ import annotations

import torch
from torch import nn


class WordDetector(nn.Module):
    """`forward(landmarks (B,T,68,2) normalised) → logits (B,n_words)`; T is 25 in the paper (any T works).

    Each frame is described by its landmarks minus the sequence's mean shape, plus its velocity (the
    difference to the previous frame). Subtracting the mean shape removes identity, which is constant
    over the clip and says nothing about the word, and would otherwise dominate the input; velocities
    make opening/closing events explicit, which the LSTM would otherwise have to learn to differentiate.
    Both are standardised with batch-norm statistics of the ground truth, which also fixes the yardstick
    when the frozen detector later judges predicted landmarks. The LSTM is bidirectional **(ours: the
    paper does not say)**, as the whole sequence is at hand, and its outputs are averaged over time
    (``pool="mean"``) or weighted by a learned score per frame (``pool="attention"``, **ours**): the word
    sits in the middle of the window with a random carrier phrase around it, and attention lets the
    detector weigh the frames that carry the word instead of averaging the carrier in.
    """

    def __init__(
        self,
        n_points: int = 68,
        n_words: int = 500,
        hidden: int = 128,
        num_layers: int = 2,
        bidirectional: bool = True,
        fc_dim: int = 256,
        dropout: float = 0.3,
        pool: str = "mean",
    ):
        super().__init__()
        self.init_kwargs = dict(
            n_points=n_points,
            n_words=n_words,
            hidden=hidden,
            num_layers=num_layers,
            bidirectional=bidirectional,
            fc_dim=fc_dim,
            dropout=dropout,
            pool=pool,
        )
        if pool not in ("mean", "attention"):
            raise ValueError(f"pool must be 'mean' or 'attention', not {pool!r}")
        features = n_points * 2 * 2
        self.norm = nn.BatchNorm1d(features)
        self.lstm = nn.LSTM(
            features,
            hidden,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        width = hidden * (2 if bidirectional else 1)
        self.score = nn.Linear(width, 1) if pool == "attention" else None
        self.fc1 = nn.Linear(width, fc_dim)
        self.fc2 = nn.Linear(fc_dim, n_words)
        self.dropout = nn.Dropout(dropout)

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        motion = landmarks - landmarks.mean(dim=1, keepdim=True)
        velocity = torch.diff(landmarks, dim=1, prepend=landmarks[:, :1])
        x = torch.cat([motion, velocity], dim=-1).flatten(2)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        out, _ = self.lstm(x)
        if self.score is None:
            pooled = out.mean(dim=1)
        else:
            pooled = (torch.softmax(self.score(out), dim=1) * out).sum(dim=1)
        h = self.dropout(torch.relu(self.fc1(pooled)))
        return self.fc2(h)
