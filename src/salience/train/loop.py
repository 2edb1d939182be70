"""A resumable training loop: AdamW, linear warm-up then cosine decay, gradient clipping.

`fit` runs ``steps`` optimisation steps. Step ``s`` always sees the same batch (the data
order is a function of the seed and the epoch), and the loop writes a checkpoint (trainable
weights, optimiser state, step, log) to ``run_dir/checkpoint.pt`` every
``checkpoint_every`` steps, at the end, and when interrupted (Ctrl-C, SIGTERM). The file is
written to a temporary name and renamed, so a kill never leaves a broken checkpoint. Called
again with the same run directory and recipe, `fit` resumes where it stopped and ends with
the same weights as an uninterrupted run. One JSON line per ``log_every`` steps goes to
``run_dir/log.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from ..errors import SalienceError


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings of a recipe.

    Attributes
    ----------
    steps : int
        Optimisation steps in all.
    batch_size : int
    lr, weight_decay : AdamW's.
    warmup : float
        Fraction of the steps with a linear warm-up from 0.
    min_lr : float
        Fraction of ``lr`` the cosine decays to.
    clip : float
        Gradient-norm clip (0: none).
    seed : int
    checkpoint_every, log_every : int
        Steps between checkpoints and between log lines.
    """

    steps: int
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup: float = 0.05
    min_lr: float = 0.05
    clip: float = 0.1
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 50

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based)."""
        warm = max(1, round(self.warmup * self.steps))
        if step < warm:
            return self.lr * (step + 1) / warm
        progress = (step - warm) / max(1, self.steps - warm)
        return self.lr * (self.min_lr + (1 - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """The sample indices of step ``step``: epochs are seeded permutations of ``range(n)``,
    cut into batches (the last, short batch of an epoch is dropped)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise SalienceError(f"{n} training samples cannot fill one batch of {batch_size}")
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return order[k * batch_size:(k + 1) * batch_size]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the children whose parameters are all frozen (a backbone)."""
    frozen = tuple(name + "." for name, child in module.named_children()
                   if any(True for _ in child.parameters()) and not any(p.requires_grad for p in child.parameters()))
    return {k: v.detach().clone() for k, v in module.state_dict().items() if not k.startswith(frozen)}


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt inside the block (so the loop checkpoints)."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


LossFn = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def fit(module: nn.Module, loss_fn: LossFn, n_samples: int, schedule: Schedule, run_dir: str | Path,
        recipe: dict | None = None, progress: bool = True, description: str = "training",
        validate: Callable[[nn.Module], dict[str, float]] | None = None, validate_every: int = 0) -> list[dict]:
    """Train ``module``'s parameters that require grad; returns the log (one dict per log line).

    ``loss_fn(module, indices) -> (loss, scalars)`` computes the loss of the samples
    ``indices`` (a batch drawn by `batch_indices`). ``recipe`` (JSON-ready) is stored in the
    checkpoint; resuming with a different recipe or schedule is an error, so a run
    directory never mixes two trainings. ``validate(module) -> scalars`` runs (in eval
    mode, without gradients) every ``validate_every`` steps; its scalars join that step's
    log line. Log lines carry ``seconds``: training time so far, resumed runs included.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    identity = {"recipe": recipe or {}, "schedule": asdict(schedule)}
    params = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": schedule.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=schedule.lr)
    start, log = 0, []
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("identity") != identity:
            raise SalienceError(f"{ckpt_path} belongs to another training (recipe or schedule differ); "
                                "use a new run directory or delete it")
        module.load_state_dict(ckpt["model"], strict=False)
        optimiser.load_state_dict(ckpt["optimiser"])
        start, log, elapsed = ckpt["step"], ckpt["log"], ckpt.get("seconds", 0.0)
    else:
        elapsed = 0.0

    def save(step: int) -> None:
        atomic_save({"identity": identity, "step": step, "model": trainable_state(module),
                     "optimiser": optimiser.state_dict(), "log": log,
                     "seconds": elapsed + time.perf_counter() - t0}, ckpt_path)

    module.train()
    step, totals, count, t0 = start, {}, 0, time.perf_counter()
    bar = Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=False)
    try:
        with _stop_on_sigterm(), bar:
            task = bar.add_task(description, total=schedule.steps, completed=start, info="")
            while step < schedule.steps:
                for group in optimiser.param_groups:
                    group["lr"] = schedule.lr_at(step)
                torch.manual_seed(schedule.seed * 1_000_003 + step)  # dropout etc.: the same on resume
                loss, scalars = loss_fn(module, batch_indices(n_samples, schedule.batch_size, step, schedule.seed))
                if not torch.isfinite(loss):
                    raise SalienceError(f"the loss became {loss.item()} at step {step}; lower the learning rate")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if schedule.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, schedule.clip)
                optimiser.step()
                step += 1
                for k, v in {"loss": loss.item(), **scalars}.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
                count += 1
                checks = {}
                if validate is not None and validate_every and (step % validate_every == 0 or step == schedule.steps):
                    module.eval()
                    with torch.no_grad():
                        checks = validate(module)
                    module.train()
                if step % schedule.log_every == 0 or step == schedule.steps or checks:
                    entry = {"step": step, "lr": schedule.lr_at(step - 1),
                             "seconds": round(elapsed + time.perf_counter() - t0, 2),
                             **{k: v / count for k, v in totals.items()}, **checks}
                    log.append(entry)
                    with open(run_dir / "log.jsonl", "a") as f:
                        f.write(json.dumps(entry) + "\n")
                    bar.update(task, info="  ".join(f"{k} {entry[k]:.3f}" for k in ("loss", *checks)))
                    totals, count = {}, 0
                if step % schedule.checkpoint_every == 0 or step == schedule.steps:
                    save(step)
                bar.update(task, completed=step)
    except KeyboardInterrupt:
        save(step)
        raise
    finally:
        module.eval()
    return log
