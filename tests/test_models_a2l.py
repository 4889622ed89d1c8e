"""A2L models and losses: shapes, what each design choice promises, and the MINE bound on toy data."""

import math

import pytest
import torch
from torch import nn

from talkface.losses import centre_frames, landmark_l2, temporal_residual_loss, velocity_loss, word_loss
from talkface.models.a2l import AudioEncoder, LandmarkEncoder, LandmarkPredictor
from talkface.models.mi_estimator import MIEstimator, mine_lower_bound, residuals, shifted
from talkface.models.word_detector import WordDetector
from talkface.training import freeze

TINY_A2L = dict(audio_channels=(4, 8, 8), audio_dim=8, landmark_dim=8, hidden=8, num_layers=1)
TINY_WD = dict(n_words=10, hidden=8, fc_dim=8)
TINY_MI = dict(hidden=8)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; two threads spin-wait badly on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def faces(b: int, t: int) -> torch.Tensor:
    return torch.randn(b, 1, 68, 2).expand(b, t, 68, 2) + 0.05 * torch.randn(b, t, 68, 2)


# shapes


def test_encoders_shapes():
    assert AudioEncoder(channels=(4, 8, 8), dim=16)(torch.randn(6, 28, 12)).shape == (6, 16)
    assert LandmarkEncoder(hidden=8, dim=5)(torch.randn(3, 68, 2)).shape == (3, 5)


def test_predictor_shape_and_starts_at_reference():
    torch.manual_seed(0)
    model = LandmarkPredictor(**TINY_A2L)
    mfcc, ref = torch.randn(3, 7, 28, 12), torch.randn(3, 68, 2)
    out = model(mfcc, ref)
    assert out.shape == (3, 7, 68, 2)
    # the displacement head starts at zero: an untrained predictor returns the still reference face
    assert torch.equal(out, ref.unsqueeze(1).expand_as(out))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        landmark_l2(model(mfcc, ref), ref.unsqueeze(1) + torch.randn(3, 7, 68, 2)).backward()
        optimizer.step()
    moved = model.eval()(mfcc, ref) - ref.unsqueeze(1)
    assert moved.abs().mean() > 1e-4 and not torch.allclose(moved[:, 0], moved[:, 1])  # audio-dependent motion


def test_predictor_in_chunks_equals_one_call():
    torch.manual_seed(0)
    model = LandmarkPredictor(**TINY_A2L).eval()
    with torch.no_grad():
        model.head.weight.normal_()
        mfcc, ref = torch.randn(2, 10, 28, 12), torch.randn(2, 68, 2)
        first, state = model.forward_with_state(mfcc[:, :4], ref)
        second, _ = model.forward_with_state(mfcc[:, 4:], ref, state)
        torch.testing.assert_close(torch.cat([first, second], dim=1), model(mfcc, ref))


@pytest.mark.parametrize("pool", ["mean", "attention"])
def test_word_detector_shape_and_ignores_identity(pool):
    torch.manual_seed(0)
    detector = WordDetector(**TINY_WD, pool=pool)
    landmarks = faces(4, 25)
    assert detector(landmarks).shape == (4, 10)
    detector.eval()
    other_identity = landmarks + torch.randn(4, 1, 68, 2)  # a different still face, same motion
    torch.testing.assert_close(detector(other_identity), detector(landmarks), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(detector(landmarks.flip(1)), detector(landmarks), atol=1e-4)  # order matters


def test_word_detector_attention_weights():
    """Attention pooling weighs frames by what is in them (a distribution over time that differs between
    clips), and an unknown pooling is refused by name."""
    torch.manual_seed(0)
    detector = WordDetector(**TINY_WD, pool="attention").eval()
    with torch.no_grad():
        detector.score.weight.normal_()
        x = detector.norm(torch.randn(2, 272, 25)).transpose(1, 2)
        out, _ = detector.lstm(x)
        weights = torch.softmax(detector.score(out), dim=1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 1))
    assert not torch.allclose(weights[0], weights[1])
    with pytest.raises(ValueError, match="pool"):
        WordDetector(**TINY_WD, pool="max")


def test_mi_estimator_shapes_and_marginal_pairs():
    estimator = MIEstimator(**TINY_MI)
    mfcc, landmarks = torch.randn(5, 9, 28, 12), faces(5, 9)
    assert residuals(mfcc).shape == (5, 8, 336) and residuals(landmarks).shape == (5, 8, 136)
    assert estimator.statistic(mfcc, landmarks).shape == (5,)
    t_joint, t_marginal = estimator(mfcc, landmarks, shift=2)
    assert t_joint.shape == t_marginal.shape == (5,)
    estimator.eval()
    mismatched = estimator.statistic(mfcc, landmarks.roll(2, dims=0))
    torch.testing.assert_close(mismatched, estimator(mfcc, landmarks, shift=2)[1])
    for _ in range(20):  # a random shift never pairs a clip with itself
        assert (shifted(torch.arange(3)) != torch.arange(3)).all()


def test_default_sizes_fit_the_weight_budget():
    """All A2L-side weights shipped (four predictors, detector, estimator) stay under 20 MB in fp16."""
    total = 4 * n_params(LandmarkPredictor()) + n_params(WordDetector()) + n_params(MIEstimator())
    assert total * 2 < 20e6


# the MINE bound


def test_mine_lower_bound_values_and_ema():
    t = torch.full((8,), 0.7)
    mi, _, ema = mine_lower_bound(t, t)
    assert abs(mi.item()) < 1e-6 and torch.isclose(ema, torch.tensor(0.7).exp())
    t_marginal = torch.tensor([0.0, 2.0])
    mi, _, ema2 = mine_lower_bound(torch.tensor([1.0, 1.0]), t_marginal, ema=torch.tensor(1.0), ema_rate=0.5)
    mean_exp = (1 + math.e**2) / 2
    assert math.isclose(mi.item(), 1.0 - math.log(mean_exp), rel_tol=1e-6)
    assert math.isclose(ema2.item(), 0.5 * 1.0 + 0.5 * mean_exp, rel_tol=1e-6)


def _fit_mine(dependent: bool, steps: int = 300) -> float:
    g = torch.Generator().manual_seed(1)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 1, generator=g)
        y = x + 0.3 * torch.randn(n, 1, generator=g) if dependent else torch.randn(n, 1, generator=g)
        return x, y

    torch.manual_seed(0)
    statistics = nn.Sequential(nn.Linear(2, 32), nn.ELU(), nn.Linear(32, 32), nn.ELU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(statistics.parameters(), lr=3e-3)
    ema = None
    for _ in range(steps):
        x, y = sample(256)
        t_joint = statistics(torch.cat([x, y], 1))
        t_marginal = statistics(torch.cat([x, shifted(y)], 1))
        _, loss, ema = mine_lower_bound(t_joint, t_marginal, ema)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x, y = sample(8192)
        mi, _, _ = mine_lower_bound(statistics(torch.cat([x, y], 1)), statistics(torch.cat([x, shifted(y)], 1)))
    return mi.item()


def test_mine_separates_dependent_from_independent_pairs():
    dependent, independent = _fit_mine(True), _fit_mine(False)
    # true values: 0.5 log(1 + 1/0.09) = 1.25 nats and 0; the bound stays below the former
    assert 0.7 < dependent < 1.4
    assert abs(independent) < 0.1


def test_mi_estimator_detects_synchronous_motion():
    """Landmarks that move with the audio's changes score a clearly higher MI than ones driven by other audio."""
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(336, 136, generator=g) / 336**0.5

    def batch(synchronous: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mfcc = torch.randn(32, 9, 28, 12, generator=g).cumsum(1)
        driver = mfcc if synchronous else torch.randn(32, 9, 28, 12, generator=g).cumsum(1)
        motion = (driver.flatten(2) @ mixing).view(32, 9, 68, 2)
        return mfcc, motion + 0.1 * torch.randn(32, 9, 68, 2, generator=g)

    def fit(synchronous: bool) -> float:
        torch.manual_seed(0)
        estimator = MIEstimator(hidden=16)
        optimizer = torch.optim.Adam(estimator.parameters(), lr=3e-3)
        ema = None
        for _ in range(60):
            _, loss, ema = mine_lower_bound(*estimator(*batch(synchronous)), ema)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        estimator.eval()
        with torch.no_grad():
            return sum(mine_lower_bound(*estimator(*batch(synchronous)))[0].item() for _ in range(8)) / 8

    sync, unrelated = fit(True), fit(False)
    assert sync > 1.0 and sync > unrelated + 1.0


# losses


def test_landmark_l2_is_mean_squared_point_distance():
    pred = torch.zeros(2, 3, 68, 2)
    target = pred.clone()
    target[..., 0] = 3.0
    target[..., 1] = 4.0
    assert landmark_l2(pred, target).item() == 25.0


def test_judges_pass_gradients_to_landmarks_only():
    torch.manual_seed(0)
    detector, estimator = freeze(WordDetector(**TINY_WD)), freeze(MIEstimator(**TINY_MI))
    mfcc = torch.randn(4, 29, 28, 12, requires_grad=True)
    pred = faces(4, 29).requires_grad_()
    loss = word_loss(detector, pred, torch.tensor([1, 2, 3, 4])) + temporal_residual_loss(estimator, mfcc, pred)
    loss.backward()
    assert pred.grad is not None and pred.grad[:, 2:27].abs().sum() > 0
    assert all(p.grad is None for p in [*detector.parameters(), *estimator.parameters()])
    assert mfcc.grad is None  # the audio is given, not learned


def test_hinged_temporal_residual_loss_stops_at_the_truth():
    """With the true landmarks, L_tr = max(0, MI_true - MI_pred): the truth itself costs nothing, and a prediction
    the estimator scores below the truth is pushed (only) up to it."""
    torch.manual_seed(0)
    estimator = freeze(MIEstimator(**TINY_MI))
    mfcc, truth = torch.randn(8, 29, 28, 12), faces(8, 29)
    assert temporal_residual_loss(estimator, mfcc, truth, truth).item() == 0.0
    pred = faces(8, 29).requires_grad_()
    torch.manual_seed(1)  # the estimator's marginal pairs are random shuffles: the same ones, in the same order
    plain = temporal_residual_loss(estimator, mfcc, pred)
    true_mi, _, _ = mine_lower_bound(*estimator(mfcc, truth))
    torch.manual_seed(1)
    hinged = temporal_residual_loss(estimator, mfcc, pred, truth)
    assert torch.isclose(hinged, torch.relu(true_mi + plain), atol=1e-7)  # plain = -MI_pred
    if hinged.item() > 0:
        hinged.backward()
        assert pred.grad.abs().sum() > 0


def test_word_loss_sees_the_centre_25_frames():
    detector = freeze(WordDetector(**TINY_WD))
    pred = faces(2, 29).requires_grad_()
    word_loss(detector, pred, torch.tensor([0, 1])).backward()
    assert pred.grad[:, [0, 1, 27, 28]].abs().sum() == 0 and pred.grad[:, 2].abs().sum() > 0
    assert torch.equal(centre_frames(torch.arange(29).view(1, 29)), torch.arange(2, 27).view(1, 25))


def test_losses_refuse_judges_that_are_not_frozen():
    detector = WordDetector(**TINY_WD)
    try:
        word_loss(detector, faces(2, 29), torch.tensor([0, 1]))
    except ValueError as e:
        assert "frozen" in str(e)
    else:
        raise AssertionError("an unfrozen detector was accepted")
    estimator = MIEstimator(**TINY_MI).eval()  # eval mode alone is not enough: parameters would still learn
    try:
        temporal_residual_loss(estimator, torch.randn(2, 29, 28, 12), faces(2, 29))
    except ValueError:
        pass
    else:
        raise AssertionError("an estimator with trainable parameters was accepted")


def test_predict_sequence_windows_like_training():
    torch.manual_seed(0)
    model = LandmarkPredictor(audio_channels=(8, 8, 8), audio_dim=16, landmark_dim=8, hidden=16, num_layers=1).eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)  # not the still face, so windows differ
    mfcc, ref = torch.randn(100, 28, 12) * 5, torch.randn(68, 2) * 0.5
    # short recordings: one plain call
    torch.testing.assert_close(model.predict_sequence(mfcc[:29], ref), model(mfcc[None, :29], ref[None])[0])
    out = model.predict_sequence(mfcc, ref)
    assert out.shape == (100, 68, 2)
    # frames only one window covers are that window's output (each window starts from a fresh state)
    with torch.no_grad():
        first = model(mfcc[None, :29], ref[None])[0]
        last = model(mfcc[None, -29:], ref[None])[0]
    torch.testing.assert_close(out[0], first[0])
    torch.testing.assert_close(out[-1], last[-1])
    # batching windows does not change anything
    torch.testing.assert_close(model.predict_sequence(mfcc, ref, batch=2), out)
    # piece by piece (a streamed video starts on the first): the same frames, the first piece after `first`
    # windows, each piece as soon as its windows have run
    calls = []
    model.register_forward_hook(lambda module, args, result: calls.append(len(args[0])))
    pieces = model.iter_sequence(mfcc, ref, batch=3, first=2)
    first = next(pieces)
    assert len(first) == 2 * 14 and calls == [2]
    rest = list(pieces)
    assert calls == [2, 3, 2] and [len(p) for p in rest] == [3 * 14, 100 - 5 * 14]  # 7 windows: the last at 71
    torch.testing.assert_close(torch.cat([first, *rest]), out)
    with pytest.raises(ValueError, match="at least one window"):
        next(model.iter_sequence(mfcc, ref, first=0))
    # a recording is not the same as one long LSTM pass over it (that is the point)
    with torch.no_grad():
        whole = model(mfcc[None], ref[None])[0]
    assert not torch.allclose(whole[60:], out[60:], atol=1e-4)


def test_bidirectional_predictor_reads_ahead():
    """With the bidirectional decoder a frame's landmarks depend on audio later than its MFCC window (the lips
    anticipate the sound); the plain LSTM's do not. The bidirectional one refuses to continue from a state."""
    torch.manual_seed(0)
    mfcc, ref = torch.randn(1, 12, 28, 12), torch.randn(1, 68, 2)
    later = mfcc.clone()
    later[:, 8:] = torch.randn(1, 4, 28, 12)  # change only frames 8-11
    for bidirectional in (False, True):
        model = LandmarkPredictor(**TINY_A2L, bidirectional=bidirectional).eval()
        torch.nn.init.normal_(model.head.weight, std=0.1)
        with torch.no_grad():
            a, b = model(mfcc, ref), model(later, ref)
        assert a.shape == (1, 12, 68, 2)
        assert torch.allclose(a[:, :8], b[:, :8]) != bidirectional
    with pytest.raises(ValueError, match="bidirectional"):
        model.forward_with_state(mfcc, ref, state=(torch.zeros(2, 1, 16), torch.zeros(2, 1, 16)))
    assert model.predict_sequence(torch.randn(40, 28, 12), ref[0]).shape == (40, 68, 2)


def test_velocity_loss_sees_motion_not_position():
    target = torch.randn(2, 6, 68, 2)
    assert velocity_loss(target + 0.3, target).item() == pytest.approx(0.0, abs=1e-12)  # same motion, offset
    still = target[:, :1].expand_as(target)  # no motion at all: the loss is the target's own motion
    motion = target[:, 1:] - target[:, :-1]
    assert velocity_loss(still, target).item() == pytest.approx(landmark_l2(motion, torch.zeros_like(motion)).item())
