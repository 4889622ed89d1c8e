"""AudioWordProbe (ours, an experiment's model): how much of the word a network can hear in a clip's audio.

MFCC windows → word, with the predictor's own audio encoder E_a (`LandmarkPredictor`) in front of a word
detector's head: `experiments/diagnose_word_detector.py --source audio` trains it to measure what the audio
gives, and `train_a2l.py --init-audio-encoder` can start E_a from its weights.
"""

from __future__ import annotations

import torch

from talkface.models.a2l import AudioEncoder


class AudioWordProbe(torch.nn.Module):
    """MFCC windows (B, T, 28, 12) → word logits: E_a per frame (as in `LandmarkPredictor`), then a
    bidirectional LSTM, attention pooling and two fully connected layers (as in `WordDetector`)."""

    def __init__(self, n_words: int = 500, audio_dim: int = 128, hidden: int = 128, fc_dim: int = 256,
                 dropout: float = 0.3):
        super().__init__()
        self.encoder = AudioEncoder(dim=audio_dim)
        self.lstm = torch.nn.LSTM(audio_dim, hidden, num_layers=2, batch_first=True, bidirectional=True,
                                  dropout=dropout)
        self.score = torch.nn.Linear(2 * hidden, 1)
        self.fc1 = torch.nn.Linear(2 * hidden, fc_dim)
        self.fc2 = torch.nn.Linear(fc_dim, n_words)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, T, 28, 12) → (B, n_words)."""
        b, t = mfcc.shape[:2]
        out, _ = self.lstm(self.encoder(mfcc.flatten(0, 1)).view(b, t, -1))
        pooled = (torch.softmax(self.score(out), dim=1) * out).sum(dim=1)
        return self.fc2(self.dropout(torch.relu(self.fc1(pooled))))
