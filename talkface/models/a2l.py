"""A2L, audio to landmarks (paper §III-A): LandmarkPredictor = E_a + E_l + LSTM decoder D_l.

For every video frame the audio encoder E_a reads a 28×12 MFCC window (±140 ms around the frame), the
landmark encoder E_l reads the identity's 68 reference landmarks once, and the LSTM decoder D_l turns
the concatenated features, frame after frame, into 68 landmarks. All landmarks live in the canonical
frame of `talkface.face.normalise_landmarks` (similarity-aligned on nose and eye corners, zero mean,
unit RMS), so head position and size never reach the model: what is left to predict is speech motion.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

# helpers


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """Temporal convolution (kernel 3), batch norm, ReLU, optionally halving the time axis."""
    layers: list[nn.Module] = [nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool1d(2))
    return nn.Sequential(*layers)


# classes


class AudioEncoder(nn.Module):
    """E_a: one MFCC window (window × n_mfcc, time × coefficient) → `dim` features.

    Three convolution blocks over the window's 28 time steps with the 12 coefficients as channels (the
    first two halve the time axis), then one linear layer. **(ours)** ATVGnet convolves the window as a
    2-D image; treating coefficients as channels is as expressive for a 28×12 input and about five times
    cheaper on a CPU, where the 2-D stack's full-resolution activations dominated training time. The input
    is first standardised per coefficient (learned batch statistics), because raw MFCCs differ in scale by
    an order of magnitude between low and high coefficients.
    """

    def __init__(
        self, n_mfcc: int = 12, window: int = 28, channels: tuple[int, int, int] = (64, 128, 128), dim: int = 128
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.convs = nn.Sequential(
            nn.BatchNorm1d(n_mfcc),
            conv_block(n_mfcc, c1, pool=True),
            conv_block(c1, c2, pool=True),
            conv_block(c2, c3, pool=False),
        )
        self.fc = nn.Sequential(nn.Linear(c3 * (window // 4), dim), nn.ReLU(inplace=True))

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(N, window, n_mfcc) → (N, dim)."""
        return self.fc(self.convs(mfcc.transpose(1, 2)).flatten(1))


class LandmarkEncoder(nn.Module):
    """E_l: the identity's reference landmarks (n_points × 2, normalised) → `dim` features, with an MLP.

    Normalised reference shapes differ from one another by a few hundredths, so the flattened input is
    standardised (batch norm) before the MLP, otherwise identity would barely register.
    """

    def __init__(self, n_points: int = 68, hidden: int = 256, dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm1d(n_points * 2),
            nn.Linear(n_points * 2, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        """(B, n_points, 2) → (B, dim)."""
        return self.net(landmarks.flatten(1))


class LandmarkPredictor(nn.Module):
    """A2L generator: `forward(mfcc (B,T,window,n_mfcc), ref_landmarks (B,68,2)) → (B,T,68,2)` landmarks.

    D_l is an LSTM over the per-frame concatenation [E_a(mfcc_t), E_l(ref)] followed by a linear layer
    that outputs a displacement from the reference, and the prediction is ref + displacement. Why a
    displacement: in the normalised frame the identity's shape is known exactly, and speech only moves
    the mouth and jaw by small amounts around it; predicting the offset (initialised to zero, so an
    untrained model returns the still reference face) lets the network spend its capacity on motion and
    keeps every identity's proportions, which an absolute regression would blur toward the mean face.

    ``bidirectional=True`` **(ours; the paper's D_l is a plain LSTM)** lets D_l read the clip's audio both
    ways. Lips move before the sound they shape (rounding for an upcoming /uw/ starts some 300 ms early),
    further ahead than the ±140 ms MFCC window reaches, and offline generation has the whole recording at
    hand anyway. Such a model cannot be fed chunk by chunk (`forward_with_state` refuses a state);
    `predict_sequence`'s overlapping windows work for both.
    """

    def __init__(
        self,
        n_mfcc: int = 12,
        window: int = 28,
        n_points: int = 68,
        audio_channels: tuple[int, int, int] = (64, 128, 128),
        audio_dim: int = 128,
        landmark_dim: int = 64,
        hidden: int = 256,
        num_layers: int = 2,
        bidirectional: bool = False,
    ):
        super().__init__()
        self.init_kwargs = dict(
            n_mfcc=n_mfcc,
            window=window,
            n_points=n_points,
            audio_channels=list(audio_channels),
            audio_dim=audio_dim,
            landmark_dim=landmark_dim,
            hidden=hidden,
            num_layers=num_layers,
            bidirectional=bidirectional,
        )
        self.n_points = n_points
        self.audio_encoder = AudioEncoder(n_mfcc, window, tuple(audio_channels), audio_dim)
        self.landmark_encoder = LandmarkEncoder(n_points, dim=landmark_dim)
        self.decoder = nn.LSTM(
            audio_dim + landmark_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=bidirectional
        )
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), n_points * 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, mfcc: torch.Tensor, ref_landmarks: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(mfcc, ref_landmarks)[0]

    @torch.no_grad()
    def predict_sequence(self, mfcc: torch.Tensor, ref_landmarks: torch.Tensor, clip: int = 29, hop: int = 14,
                         batch: int = 64) -> torch.Tensor:
        """Landmarks (T, 68, 2) for a recording of any length (T, 28, 12), one identity (68, 2). (ours)

        The predictor learns on 29-frame clips that start from a zero LSTM state; run over minutes of audio
        in one pass its state would drift outside anything it saw. So, as in training, each `clip`-frame
        window starts fresh, windows overlap by ``clip - hop`` frames and are cross-faded with triangular
        weights (a window's first frames, where the LSTM is still warming up, count least). Windows go
        through the network `batch` at a time: memory is bounded whatever the length. A recording of at
        most `clip` frames is one plain call. ``iter_sequence`` gives the same frames piece by piece.
        """
        return torch.cat(list(self.iter_sequence(mfcc, ref_landmarks, clip, hop, batch, first=batch)))

    @torch.no_grad()
    def iter_sequence(self, mfcc: torch.Tensor, ref_landmarks: torch.Tensor, clip: int = 29, hop: int = 14,
                      batch: int = 64, first: int = 4) -> Iterator[torch.Tensor]:
        """``predict_sequence``'s landmarks in consecutive pieces (n, 68, 2), each as soon as every window over
        it has run: `first` windows, then `batch` at a time. (ours)

        A video streamed while it is made starts on the first piece (`first` windows: ``first * hop`` frames)
        instead of waiting for the whole recording's A2L (0.2 s for two minutes on a 2-core CPU).
        """
        if first < 1 or batch < 1:
            raise ValueError(f"first and batch must be at least one window, not {first} and {batch}")
        t = mfcc.shape[0]
        if t <= clip:
            yield self(mfcc[None], ref_landmarks[None])[0]
            return
        starts = [*range(0, t - clip, hop), t - clip]
        weight = torch.minimum(torch.arange(1, clip + 1), torch.arange(clip, 0, -1)).to(mfcc)
        total = torch.zeros(t, self.n_points, 2, dtype=mfcc.dtype, device=mfcc.device)
        norm = torch.zeros(t, 1, 1, dtype=mfcc.dtype, device=mfcc.device)
        done, i = 0, 0
        while i < len(starts):
            group = starts[i : i + (first if i == 0 else batch)]
            i += len(group)
            windows = torch.stack([mfcc[s : s + clip] for s in group])
            out = self(windows, ref_landmarks[None].expand(len(group), -1, -1))
            for s, landmarks in zip(group, out):
                total[s : s + clip] += weight[:, None, None] * landmarks
                norm[s : s + clip] += weight[:, None, None]
            final = starts[i] if i < len(starts) else t  # no later window reaches before its start
            yield total[done:final] / norm[done:final]
            done = final

    def forward_with_state(
        self, mfcc: torch.Tensor, ref_landmarks: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """`forward`, continuing from the LSTM `state` of a previous call and returning the new one.

        Feeding a long recording chunk by chunk this way gives the same landmarks as one call, with memory
        bounded by the chunk length. A bidirectional decoder has no such state: it refuses one.
        """
        if state is not None and self.decoder.bidirectional:
            raise ValueError("a bidirectional decoder reads the whole clip: it cannot continue from a state")
        b, t = mfcc.shape[:2]
        audio = self.audio_encoder(mfcc.flatten(0, 1)).view(b, t, -1)
        identity = self.landmark_encoder(ref_landmarks).unsqueeze(1).expand(b, t, -1)
        hidden, state = self.decoder(torch.cat([audio, identity], dim=-1), state)
        displacement = self.head(hidden).view(b, t, self.n_points, 2)
        return ref_landmarks.unsqueeze(1) + displacement, state
