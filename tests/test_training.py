"""Training plumbing: exact resume, resumable data order, the CSV log, and a real 2-process DDP run."""

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from talkface.training import (
    CSVLogger,
    ResumeError,
    Run,
    TrainState,
    epoch_batches,
    load_training_state,
    make_loader,
    save_training_state,
    seed_everything,
)

REPO = Path(__file__).parent.parent


def toy_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=g))


def train(out: Path, steps: int, resume: bool = False, kill_after: int | None = None) -> list[float]:
    """The loop of talkface.training's docstring; returns the losses of the steps this call ran.

    Dropout, a numpy draw and a python draw per step make every RNG matter, Adam makes the optimizer
    state matter, and the shuffled loader makes the data position matter.
    """
    run = Run(seed=3)
    seed_everything(run.seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    loader = make_loader(toy_data(), batch_size=8, run=run, seed=run.seed)  # 5 batches per epoch
    state = TrainState(hparams={"lr": 1e-2})
    if resume:
        state = load_training_state(out / "last", run, {"model": model}, {"opt": optimizer}, {"lr": scheduler})
    log = CSVLogger(out / "log.csv", run, truncate_to=state.log_pos)
    losses = []
    for epoch in range(state.epoch, 100):
        for i, (x, y) in epoch_batches(loader, epoch, state.batch if epoch == state.epoch else 0):
            noise = np.random.rand() * 1e-3 + random.random() * 1e-3  # noqa: NPY002 - the global RNGs under test
            loss = (model(x) - y).pow(2).mean() + noise
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            state.step += 1
            losses.append(loss.item())
            log.log(step=state.step, loss=loss.item())
            if state.step % 3 == 0:
                state.epoch, state.batch, state.log_pos = epoch, i + 1, log.position()
                save_training_state(out / "last", run, {"model": model}, {"opt": optimizer}, state, {"lr": scheduler})
            if state.step in (steps, kill_after):
                return losses
    return losses


def test_resume_continues_with_identical_losses(tmp_path):
    reference = train(tmp_path / "a", steps=14)
    # "killed" after step 8: the last saved state is step 6, and steps 7-8 were logged but are lost
    first = train(tmp_path / "b", steps=14, kill_after=8)
    assert first == reference[:8]
    resumed = train(tmp_path / "b", steps=14, resume=True)
    assert resumed == reference[6:]  # bit-identical, not just close
    # the log holds each step exactly once, as if never interrupted
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert rows == (tmp_path / "a" / "log.csv").read_text().splitlines()
    assert len(rows) == 15


def test_resume_restores_hparams_and_optimizer_types(tmp_path):
    train(tmp_path, steps=3)
    run = Run()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    state = load_training_state(tmp_path / "last", run, {"model": model}, {"opt": optimizer})
    assert (state.step, state.epoch, state.batch, state.hparams) == (3, 0, 3, {"lr": 1e-2})
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999) and optimizer.param_groups[0]["lr"] == 1e-2
    assert int(optimizer.state_dict()["state"][0]["step"]) == 3


def test_resume_with_other_hparams_is_refused_before_anything_changes(tmp_path):
    train(tmp_path, steps=3)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    before = [p.clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    with pytest.raises(ResumeError, match=r"last.safetensors was trained with lr = 0.01 but this run asks for 0.02"):
        load_training_state(tmp_path / "last", Run(), {"model": model}, {"opt": optimizer}, hparams={"lr": 2e-2})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # how long it runs and where things are may change
    state = load_training_state(tmp_path / "last", Run(), {"model": model}, {"opt": optimizer},
                                hparams={"lr": 1e-2, "max_steps": 99, "out": "elsewhere"})
    assert state.step == 3


def test_sampler_resumes_mid_epoch_and_splits_ranks():
    data = TensorDataset(torch.arange(20))
    loader = make_loader(data, batch_size=3, run=Run(), seed=1)
    full = [b[0].tolist() for _, b in epoch_batches(loader, epoch=2)]
    tail = [(i, b[0].tolist()) for i, b in epoch_batches(loader, epoch=2, start_batch=4)]
    assert tail == list(enumerate(full))[4:]
    assert full != [b[0].tolist() for _, b in epoch_batches(loader, epoch=3)]  # reshuffled per epoch
    seen = []
    for rank in range(2):
        for _, batch in epoch_batches(make_loader(data, 5, Run(rank=rank, world_size=2), seed=1), epoch=0):
            seen += batch[0].tolist()
    assert sorted(seen) == list(range(20))  # two ranks, disjoint halves


def test_csv_logger_only_on_main_rank(tmp_path):
    CSVLogger(tmp_path / "log.csv", Run(rank=1, world_size=2)).log(step=1, loss=0.5)
    assert not (tmp_path / "log.csv").exists()
    log = CSVLogger(tmp_path / "log.csv", Run())
    log.log(step=1, loss=0.5)
    log.log(step=2, loss=0.25, extra=1)
    CSVLogger(tmp_path / "log.csv", Run()).log(step=3)  # reopened: keeps the header, appends
    assert (tmp_path / "log.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.25", "3,"]


DDP_SCRIPT = """
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from talkface.training import (TrainState, all_reduce_mean, epoch_batches, load_training_state, make_loader,
                               save_training_state, setup, teardown, wrap_ddp)

out = Path(sys.argv[1])
run = setup(seed=7)
torch.manual_seed(100 + run.rank)  # different initial weights per rank: DDP must make them equal
model = wrap_ddp(torch.nn.Linear(4, 1), run)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.arange(64, dtype=torch.float32).view(16, 4) / 64
loader = make_loader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2, run=run, seed=run.seed)
state = TrainState()
for epoch in range(2):
    for i, (xb, yb) in epoch_batches(loader, epoch):
        loss = (model(xb) - yb).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        state.step += 1
mean_loss = all_reduce_mean(loss.item(), run)
save_training_state(out / "last", run, {"model": model}, {"opt": optimizer}, state)
state = load_training_state(out / "last", run, {"model": model}, {"opt": optimizer})
weights = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
save_file({**weights, "mean_loss": torch.tensor(mean_loss), "steps": torch.tensor(state.step)},
          str(out / f"rank{run.rank}.safetensors"))
teardown(run)
"""


def test_torchrun_two_processes_agree(tmp_path):
    script = tmp_path / "ddp_toy.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    result = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    assert ranks[0]["steps"].item() == 8  # 16 samples / 2 ranks / batch 2, for 2 epochs
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert (tmp_path / "last.safetensors").exists()
