"""Plumbing shared by every script in train/: processes, devices, seeds, data order, logs, resumable state.

One script runs the same on a laptop CPU and on N GPUs:

    python -m train.x ...                          # one process, CPU or the first GPU
    torchrun --nproc_per_node=N -m train.x ...     # N processes, DistributedDataParallel

Every trainer is the same loop, `Trainer.fit`, around what differs: the models and optimizers, one training
step, a validation and the checkpoint it writes at the end:

    run = setup(seed)
    trainer = Trainer(run, out, args, argv, {"model": model}, {"opt": optimizer}, desc="A2L")  # resumes
    trainer.fit(loader, step, validate=lambda: evaluate(model, val_set), lr=lambda s: learning_rate(s, args))
    config = {..., "training": trainer.record("train_a2l.py")}                                    # rank 0
    teardown(run)

Training state is one safetensors file whose metadata holds the JSON part (step, epoch, RNG states,
hyper-parameters, log position), written to a temporary name and renamed: a kill at any moment leaves
the previous state intact, and resuming continues with exactly the losses the uninterrupted run would
have produced (same weights, optimizer moments, data order and random numbers).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import shlex
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from talkface.checkpoints import atomic_save_json, atomic_save_tensors, read_safetensors, unwrap
from talkface.errors import TalkFaceError

TRAIN_STATE_FORMAT = "talkface-train-state/1"

# processes and devices


@dataclass
class Run:
    """Where this process stands: its rank among world_size processes, and the device it computes on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs and checkpoints, so N processes don't race on the same files."""
        return self.rank == 0


def seed_everything(seed: int) -> None:
    """Seed every generator a training step may draw from (torch CPU and CUDA, numpy, random)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - data code may still use the legacy global RNG
    torch.manual_seed(seed)


def setup(seed: int = 0) -> Run:
    """Start this process: join the torchrun group if there is one, pick the device, seed the RNGs.

    Each rank is seeded with seed + rank so that augmentation and dropout differ between ranks; the model
    weights still start equal everywhere because DDP copies rank 0's at wrap time.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    seed_everything(seed + rank)
    return Run(rank=rank, local_rank=local_rank, world_size=world_size, device=device, seed=seed)


def teardown(run: Run) -> None:
    """Leave the process group cleanly (torchrun otherwise prints warnings at exit).

    All ranks meet first: a rank that tears its gloo connections down while a peer's are still busy can make
    that peer abort ("terminate called without an active exception"; seen once in CI).
    """
    if run.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, run: Run) -> nn.Module:
    """Move the model to this rank's device and, with several processes, wrap it in DDP."""
    model.to(run.device)
    if not run.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: how a pretrained judge (word detector, MI estimator) joins training."""
    module.eval()
    module.requires_grad_(False)
    return module


def all_reduce_mean(value: float, run: Run) -> float:
    """Average a number over all ranks (for validation metrics computed on each rank's share of the data)."""
    if not run.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=run.device)
    dist.all_reduce(t)
    return t.item() / run.world_size


def progress(iterable: Iterable, run: Run, **kwargs: Any) -> Iterable:
    """tqdm on rank 0, silence elsewhere."""
    return tqdm(iterable, disable=not run.is_main, dynamic_ncols=True, **kwargs)


# data order


class ResumableSampler(DistributedSampler):
    """DistributedSampler (a fixed shuffle per epoch, one share per rank) that can start in mid-epoch.

    The order depends only on (seed, epoch), never on the global RNG, so a resumed run sees the very
    batches the interrupted one would have seen next. It also works with a single process.
    """

    def __init__(
        self,
        dataset: Dataset,
        run: Run,
        seed: int,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = True,
    ):
        super().__init__(
            dataset,
            num_replicas=run.world_size,
            rank=run.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.batch_size = batch_size
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.start_batch * self.batch_size)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    run: Run,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader over this rank's share of `dataset`, in a resumable order (see `epoch_batches`).

    The loader gets its own generator, so creating an iterator draws nothing from the global RNG (which
    would shift dropout noise after a resume). Resuming is exact with num_workers=0; with workers the
    batches are the same but per-worker augmentation randomness may differ.
    """
    sampler = ResumableSampler(dataset, run, seed, batch_size, shuffle=shuffle, drop_last=drop_last)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        pin_memory=run.device.type == "cuda",
        persistent_workers=False,
        **kwargs,
    )


def epoch_batches(loader: DataLoader, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, Any]]:
    """Yield (batch index, batch) for one epoch, beginning at `start_batch` (0 unless resuming mid-epoch)."""
    loader.sampler.set_position(epoch, start_batch)
    yield from enumerate(loader, start_batch)
    loader.sampler.set_position(epoch, 0)


# logging


class CSVLogger:
    """Append rows of numbers to a CSV file (rank 0 only); a resume cuts rows logged after its checkpoint."""

    def __init__(self, path: str | os.PathLike, run: Run, truncate_to: int | None = None):
        self.path = Path(path)
        self.enabled = run.is_main
        self.fields: list[str] | None = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_to is not None and self.path.exists():
            with open(self.path, "r+b") as f:
                f.truncate(truncate_to)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f))

    def log(self, **row: Any) -> None:
        """Write one row; the first row fixes the columns, later rows may leave some empty."""
        if not self.enabled:
            return
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})

    def position(self) -> int:
        """Byte size of the log now: saved with the training state so a resume can cut later rows."""
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0


# resumable training state


@dataclass
class TrainState:
    """Where training is: `step` optimizer steps done, next `batch` of `epoch`, log size, free-form extras."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    log_pos: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as JSON-able values (bytes as base64)."""
    state: dict[str, Any] = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state["numpy"] = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        saved = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(saved[: torch.cuda.device_count()])


def _gather_strings(text: str, run: Run) -> list[str]:
    """Every rank's string, on every rank (tensors, not pickled objects, travel between processes)."""
    if not run.distributed:
        return [text]
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=run.device)
    size = torch.tensor([data.numel()], device=run.device)
    sizes = [torch.zeros_like(size) for _ in range(run.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=run.device)
    padded[: data.numel()] = data
    gathered = [torch.zeros_like(padded) for _ in range(run.world_size)]
    dist.all_gather(gathered, padded)
    return [bytes(g[: int(s.item())].tolist()).decode() for g, s in zip(gathered, sizes)]


def _json_value(v: Any) -> Any:
    return v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v


def save_training_state(
    path_stem: str | os.PathLike,
    run: Run,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainState,
    schedulers: dict[str, Any] | None = None,
) -> None:
    """Write STEM.safetensors holding models, optimizers, schedulers, RNG states of all ranks and `state`.

    Call it on every rank (RNG states are gathered); only rank 0 writes. Optimizer tensors are stored
    flat as `optim.NAME.PARAM_INDEX.KEY`, their other settings in the JSON metadata.
    """
    rng = [json.loads(s) for s in _gather_strings(json.dumps(_rng_state()), run)]
    if run.is_main:
        _write_training_state(
            Path(path_stem).with_suffix(".safetensors"), run, models, optimizers, state, schedulers, rng
        )
    if run.distributed:
        dist.barrier()  # no rank runs ahead (e.g. to load the state) before the file is there


def _write_training_state(
    path: Path,
    run: Run,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: TrainState,
    schedulers: dict[str, Any] | None,
    rng: list[dict[str, Any]],
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        tensors.update({f"model.{name}.{k}": v for k, v in unwrap(model).state_dict().items()})
    optim_meta: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, param_state in sd["state"].items():
            for key, value in param_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{name}.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        groups = [{k: _json_value(v) for k, v in g.items()} for g in sd["param_groups"]]
        optim_meta[name] = {"param_groups": groups, "scalars": scalars}
    meta = {
        "format": TRAIN_STATE_FORMAT,
        "state": asdict(state),
        "world_size": run.world_size,
        "rng": rng,
        "optimizers": optim_meta,
        "schedulers": {name: s.state_dict() for name, s in (schedulers or {}).items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(tensors, path, {"talkface": json.dumps(meta)})


# What a resumed run may change: where things are, how long it goes on and how often it reports.
# Anything else (learning rate, batch size, loss weights, model size, seed...) would silently make the
# resumed run a different experiment than the one its checkpoint and model card describe.
RESUME_MAY_CHANGE = frozenset({
    "resume", "max_steps", "log_every", "val_every", "save_every", "num_workers",
    "out", "cache", "detector", "estimator", "init",
})


class ResumeError(TalkFaceError):
    """A resumed run asks for other hyper-parameters than the saved state was trained with."""


def check_resume_hparams(saved: dict[str, Any], current: dict[str, Any], path: Path,
                         may_change: frozenset[str] = RESUME_MAY_CHANGE) -> None:
    """Raise ResumeError naming the first setting that differs between the saved run and this one."""
    for key in sorted((set(saved) | set(current)) - may_change):
        if key in saved and key in current and saved[key] != current[key]:
            raise ResumeError(
                f"{path} was trained with {key} = {saved[key]!r} but this run asks for {current[key]!r}; "
                f"resume with the same settings, or start afresh in another --out."
            )


def load_training_state(
    path_stem: str | os.PathLike,
    run: Run,
    models: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any] | None = None,
    hparams: dict[str, Any] | None = None,
) -> TrainState:
    """Restore what `save_training_state` wrote, in place, and return the TrainState to continue from.

    With `hparams` (this run's settings), refuse to resume a run saved with other settings
    (`check_resume_hparams`) before anything is touched. Resuming with another number of processes
    works but is no longer bit-exact: the RNG streams are reseeded and the position in the epoch is
    rescaled.
    """
    path = Path(path_stem).with_suffix(".safetensors")
    tensors, metadata = read_safetensors(path)
    meta = json.loads(metadata["talkface"])
    if hparams is not None:
        check_resume_hparams(meta["state"].get("hparams", {}), json.loads(json.dumps(hparams, default=str)), path)
    for name, model in models.items():
        prefix = f"model.{name}."
        unwrap(model).load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, optimizer in optimizers.items():
        saved = meta["optimizers"][name]
        per_param: dict[int, dict[str, Any]] = {}
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, tensor_key = key[len(prefix) :].split(".", 1)
                per_param.setdefault(int(index), {})[tensor_key] = value
        for index, scalars in saved["scalars"].items():
            per_param.setdefault(int(index), {}).update(scalars)
        groups = saved["param_groups"]
        for group, current in zip(groups, optimizer.param_groups):
            # JSON turned tuples (Adam's betas) into lists; give them back the type the optimizer made.
            for key, value in current.items():
                if isinstance(value, tuple) and key in group:
                    group[key] = tuple(group[key])
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    for name, scheduler in (schedulers or {}).items():
        scheduler.load_state_dict(meta["schedulers"][name])
    state = TrainState(**meta["state"])
    if meta["world_size"] == run.world_size:
        _set_rng_state(meta["rng"][run.rank])
    else:
        warnings.warn(
            f"resuming {meta['world_size']}-process training with {run.world_size} processes: not bit-exact",
            stacklevel=2,
        )
        seed_everything(run.seed + run.rank + state.step)
        state.batch = state.batch * meta["world_size"] // run.world_size
    return state


# the training loop


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One plain gradient step on `loss`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class RunFolderError(TalkFaceError):
    """A run folder that would be overwritten, or a resume with nothing to resume."""


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse, before anything is written, to start a run over an existing one (its logs and saved state would be
    lost) and to "resume" a folder with no saved state (that would silently start from scratch)."""
    state = out / "last.safetensors"
    logs = [p for p in (out / "log.csv", out / "val.csv") if p.exists() and p.stat().st_size > 0]
    if not resume and (state.exists() or logs):
        found = ", ".join(p.name for p in [state, *logs] if p.exists())
        raise RunFolderError(f"{out} already holds a training run ({found}); nothing was changed. Continue it "
                             "with --resume, or give --out a new folder (delete this one to start it afresh).")
    if resume and not state.exists():
        raise RunFolderError(f"--resume was given but {out} has no saved state ({state.name}); nothing was "
                             "changed. Drop --resume to start a new run there.")


class Trainer:
    """The one training loop: resume, logs, progress bar, validation, resumable checkpoints and the training
    record of the model card. A trainer script brings only what differs (models, step, validation, export).

    Construction refuses a folder that holds a run unless resuming, and a resume without a saved state
    (``check_run_folder``); it resumes from OUT/last.safetensors when ``args.resume`` (refusing other
    hyper-parameters) and opens OUT/log.csv (every ``args.log_every`` steps) and OUT/val.csv (every
    ``args.val_every``). ``args`` needs ``out``, ``resume``, ``max_steps``, ``log_every``, ``val_every`` and
    ``save_every``.
    """

    def __init__(self, run: Run, out: str | os.PathLike, args: Any, argv: list[str], models: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], desc: str):
        self.run, self.out, self.args, self.argv, self.desc = run, Path(out), args, list(argv), desc
        self.models, self.optimizers = models, optimizers
        self.state = TrainState(hparams=vars(args))
        check_run_folder(self.out, args.resume)
        if args.resume:
            self.state = load_training_state(self.out / "last", run, models, optimizers, hparams=vars(args))
        self.log = CSVLogger(self.out / "log.csv", run, truncate_to=self.state.log_pos if args.resume else 0)
        self.val_log = CSVLogger(self.out / "val.csv", run,
                                 truncate_to=self.state.extra.get("val_log_pos", 0) if args.resume else 0)
        self.seconds = self.state.extra.get("seconds", 0.0)  # training time of earlier sessions, then of all
        if run.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_save_json({"argv": self.argv, "args": vars(args)}, self.out / "args.json")

    def fit(self, loader: DataLoader, step: Callable[[Any], dict[str, Any]],
            validate: Callable[[], dict[str, float]] | None = None, lr: Callable[[int], float] | None = None,
            extra: Callable[[], dict[str, Any]] | None = None, after_step: Callable[[int], None] | None = None
            ) -> TrainState:
        """Train until ``args.max_steps``. `step(batch)` does one optimisation step and returns what to log
        (numbers or one-element tensors, read only when logged); `lr(step)` sets every optimizer's learning rate
        first; `validate()` runs on rank 0; `extra()` adds to the saved state what a resume needs besides models
        and optimizers; `after_step(step)` runs after each step (e.g. sample images)."""
        args, run, state = self.args, self.run, self.state
        if len(loader) == 0:
            raise SystemExit(f"fewer than {args.batch_size * run.world_size} training items: lower --batch-size")
        bar = progress(None, run, total=args.max_steps, initial=state.step, desc=self.desc)
        start = tic = time.perf_counter()
        earlier = self.seconds
        while state.step < args.max_steps:
            for i, batch in epoch_batches(loader, state.epoch, state.batch):
                if lr is not None:
                    for optimizer in self.optimizers.values():
                        for group in optimizer.param_groups:
                            group["lr"] = lr(state.step)
                values = step(batch)
                state.step += 1
                bar.update(1)
                if state.step % args.log_every == 0:
                    numbers = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in values.items()}
                    rates = {"lr": next(iter(self.optimizers.values())).param_groups[0]["lr"]} if lr else {}
                    self.log.log(step=state.step, epoch=state.epoch, **numbers, **rates,
                                 s_per_step=(time.perf_counter() - tic) / args.log_every)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in numbers.items()})
                    tic = time.perf_counter()
                if after_step is not None:
                    after_step(state.step)
                if run.is_main and validate is not None and state.step % args.val_every == 0:
                    self.val_log.log(step=state.step, **validate())
                if state.step % args.save_every == 0 or state.step == args.max_steps:
                    state.batch, state.log_pos = i + 1, self.log.position()
                    self.seconds = earlier + time.perf_counter() - start
                    state.extra.update(val_log_pos=self.val_log.position(), seconds=self.seconds,
                                       **(extra() if extra else {}))
                    save_training_state(self.out / "last", run, self.models, self.optimizers, state)
                if state.step >= args.max_steps:
                    break
            else:
                state.epoch, state.batch = state.epoch + 1, 0
        bar.close()
        self.seconds = earlier + time.perf_counter() - start
        return state

    def record(self, script: str) -> dict[str, Any]:
        """How the model was trained, for its JSON and model card: command, steps, time, device, settings."""
        return {
            "command": f"python -m train.{script.removesuffix('.py')} " + shlex.join(self.argv),
            "steps": self.state.step,
            "seconds": self.seconds,
            "device": str(self.run.device),
            "processes": self.run.world_size,
            "args": vars(self.args),
        }
