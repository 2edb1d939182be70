"""`salience train detector NAME` and `salience train vit NAME`: the shipped models' recipes.

The main CLI registers the sub-app with ``app.add_typer(train_app, name="train")``. A run
resumes from ``--work DIR`` (cached features and checkpoints), so the same command
continues an interrupted training. Bad input ends with one red line and exit code 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
import typer
from rich.console import Console
from rich.markup import escape

from ..errors import SalienceError

train_app = typer.Typer(no_args_is_help=True, help="Train the project's scene models (resumable).")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

_WORK = typer.Option(Path("runs/train"), "--work", help="Folder for cached features, checkpoints and logs (resumed).")
_OUT = typer.Option(None, "--out", help="Where to write the trained checkpoint (default: in the run folder).")
_STEPS = typer.Option(None, "--steps", help="Override the recipe's number of optimisation steps.")
_N = typer.Option(None, "--n-train", help="Override the recipe's number of training scenes.")
_THREADS = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice).")


def _run(train: Callable[[], dict], work: Path, threads: Optional[int]) -> None:
    """Run ``train()`` and print its result; errors and interruptions as one line."""
    if threads:
        torch.set_num_threads(threads)
    try:
        meta = train()
    except SalienceError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        err.print(f"interrupted; the checkpoint in {work} resumes with the same command")
        raise typer.Exit(130)
    out.print(json.dumps({k: v for k, v in meta.items() if k != "recipe"}, indent=2))


@train_app.command()
def detector(
    name: str = typer.Argument(..., help="Recipe: scene-detr or scene-deformable-detr."),
    work: Path = _WORK, out_path: Optional[Path] = _OUT, steps: Optional[int] = _STEPS,
    n_train: Optional[int] = _N, threads: Optional[int] = _THREADS,
    aajts: Optional[float] = typer.Option(None, "--aajts", help="Weight of the AAJTS attention-outside-box loss."),
):
    """Train a scene detector on generated detection scenes; report held-out COCO AP."""
    from .recipes import detector_recipe, train_detector

    _run(lambda: train_detector(name, work, out_path, recipe=detector_recipe(name, steps, n_train, aajts)), work, threads)


@train_app.command()
def vit(
    name: str = typer.Argument("scene-vit", help="Recipe: scene-vit."),
    work: Path = _WORK, out_path: Optional[Path] = _OUT, steps: Optional[int] = _STEPS,
    n_train: Optional[int] = _N, threads: Optional[int] = _THREADS,
):
    """Train the scene ViT on generated classification scenes; report held-out accuracy."""
    from .classifier import classifier_recipe, train_classifier

    _run(lambda: train_classifier(name, work, out_path, recipe=classifier_recipe(name, steps, n_train)), work, threads)
