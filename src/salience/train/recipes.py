"""The recipes behind the shipped scene models (`salience train detector NAME`).

A recipe fixes everything a training depends on: the model config, the generated training
and held-out scene sets (seeds 0 and 1: disjoint scenes of the same vocabulary), the
criterion and the schedule. Training runs on the frozen backbone's cached features
(`features`), resumes from its run directory, and ends with a head-only checkpoint whose
``meta`` records the recipe, the training time and the held-out scores.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ..compat import import_optional
from ..data.scenes import SceneDataset
from ..errors import SalienceError
from ..methods.eive import query_maps
from ..models.checkpoint import save_head_checkpoint
from ..models.zoo.detr_parts import capture_cross_attention
from ..models.zoo.scene_detectors import DECODERS, build_scene_detector
from .coco_eval import evaluate_detector
from .detection import SetCriterion
from .features import cached_features
from .loop import Schedule, fit

TRAIN_SEED, HELD_OUT_SEED = 0, 1


@dataclass(frozen=True)
class DetectorRecipe:
    """How one scene detector is trained."""

    model: dict
    criterion: SetCriterion
    schedule: Schedule
    n_train: int = 6000
    n_held_out: int = 500
    levels: tuple[int, ...] = (0, 1, 2)

    def to_dict(self) -> dict:
        return {"model": self.model, "criterion": asdict(self.criterion), "schedule": asdict(self.schedule),
                "n_train": self.n_train, "n_held_out": self.n_held_out, "levels": list(self.levels),
                "train_seed": TRAIN_SEED, "held_out_seed": HELD_OUT_SEED}


DETECTOR_RECIPES = {
    "scene-detr": DetectorRecipe(
        model=dict(architecture="scene-detr", num_queries=25, d_model=128, heads=8, ffn=512, encoder_layers=3,
                   decoder_layers=3, level=1, dropout=0.0, input_size=256),
        criterion=SetCriterion(sigmoid=False),
        schedule=Schedule(steps=4000, batch_size=32, lr=2e-4, weight_decay=1e-4, warmup=0.03, clip=0.1),
        levels=(1,),
    ),
    "scene-deformable-detr": DetectorRecipe(
        model=dict(architecture="scene-deformable-detr", num_queries=25, d_model=128, heads=8, ffn=512,
                   encoder_layers=0, decoder_layers=3, points=4, dropout=0.0, input_size=256),
        criterion=SetCriterion(sigmoid=True),
        schedule=Schedule(steps=4000, batch_size=32, lr=2e-4, weight_decay=1e-4, warmup=0.03, clip=0.1),
    ),
}


def shortened(recipe, steps: int | None, n_train: int | None):
    """A recipe (detector or classifier) with fewer ``steps`` or training scenes, where given."""
    if steps is not None:
        recipe = replace(recipe, schedule=replace(recipe.schedule, steps=steps))
    if n_train is not None:
        recipe = replace(recipe, n_train=n_train)
    return recipe


def detector_recipe(name: str, steps: int | None = None, n_train: int | None = None,
                    attention_weight: float | None = None) -> DetectorRecipe:
    """A named recipe, optionally shortened (``steps``, ``n_train``) or with the AAJTS term on."""
    if name not in DETECTOR_RECIPES:
        raise SalienceError(f"no detector recipe '{name}'; known: {', '.join(DETECTOR_RECIPES)}")
    recipe = shortened(DETECTOR_RECIPES[name], steps, n_train)
    if attention_weight is not None:
        recipe = replace(recipe, criterion=replace(recipe.criterion, attention_weight=attention_weight))
    return recipe


def scene_features(work_dir: Path, task: str, n: int, seed: int, input_size: int, progress: bool):
    """The cached features of a scene set, shared by every recipe that uses the same set."""
    folder = work_dir / "features" / f"{task}-seed{seed}-n{n}-{input_size}px"
    return cached_features(SceneDataset(n, task, seed), folder, input_size=input_size, progress=progress)


def train_detector(name: str, work_dir: str | Path, out: str | Path | None = None, recipe: DetectorRecipe | None = None,
                   progress: bool = True, validate_every: int = 500) -> dict:
    """Train the detector of recipe ``name`` (resuming in ``work_dir``); write its checkpoint.

    Returns the checkpoint's ``meta``: held-out AP / AP50 / AP75, training seconds, steps.
    """
    recipe = recipe or detector_recipe(name)
    import_optional("pycocotools.cocoeval")  # needed at the end: fail before training, not after
    work_dir = Path(work_dir)
    size = recipe.model["input_size"]
    train = scene_features(work_dir, "detection", recipe.n_train, TRAIN_SEED, size, progress)
    held_out = scene_features(work_dir, "detection", recipe.n_held_out, HELD_OUT_SEED, size, progress)
    class_names = json.loads((train.folder / "meta.json").read_text())["class_names"]
    module = build_scene_detector({**recipe.model, "num_classes": len(class_names)})
    decode = DECODERS[recipe.model["architecture"]]
    train_levels = [train.load(l) if l in recipe.levels else None for l in range(3)]
    held_levels = [held_out.load(l) if l in recipe.levels else None for l in range(3)]
    train_targets, criterion = train.targets, recipe.criterion

    def loss_fn(model, idx):
        feats = [None if f is None else f[idx].float() for f in train_levels]
        targets = [train_targets[i] for i in idx.tolist()]
        if criterion.attention_weight == 0:
            return criterion(model.head(feats), targets)
        with capture_cross_attention(model) as record:
            output = model.head(feats)
        return criterion(output, targets, [query_maps(layer) for layer in record.layers])

    def validate(model):
        subset = min(200, len(held_out))
        scores = evaluate_detector(model.head, decode, [None if f is None else f[:subset] for f in held_levels],
                                   held_out.targets[:subset], size, len(class_names))
        return {"val_AP": scores["AP"], "val_AP50": scores["AP50"]}

    run_dir = work_dir / "runs" / (name if criterion.attention_weight == 0 else f"{name}-aajts{criterion.attention_weight:g}")
    started = time.perf_counter()
    log = fit(module, loss_fn, len(train), recipe.schedule, run_dir, recipe=recipe.to_dict(), progress=progress,
              description=name, validate=validate, validate_every=validate_every)
    module.eval()
    scores = evaluate_detector(module.head, decode, held_levels, held_out.targets, size, len(class_names))
    return save_trained(module, class_names, recipe, log, {**scores, "n": len(held_out)}, run_dir,
                        out or run_dir / f"{name}.pt", started)


def save_trained(module, class_names: list[str], recipe, log: list[dict], held_out: dict, run_dir: Path,
                 out: str | Path, started: float) -> dict:
    """Write the trained head's checkpoint to ``out`` and its ``meta`` to ``run_dir/result.json``;
    return the ``meta``: recipe, training time (``log``'s last entry) and ``held_out`` scores."""
    meta = {"recipe": recipe.to_dict(), "train_seconds": log[-1]["seconds"], "steps": recipe.schedule.steps,
            "held_out": {**held_out, "seed": HELD_OUT_SEED},
            "torch": str(torch.__version__), "wall_seconds_this_call": round(time.perf_counter() - started, 1)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_head_checkpoint(module, class_names, out, meta=meta)
    (run_dir / "result.json").write_text(json.dumps(meta, indent=2))
    return meta
