"""The recipe behind the shipped scene ViT: a classifier on generated classification scenes.

As for the detectors (`recipes`), the training set is scene seed 0 and the held-out set seed
1, the backbone's C16 features are cached once per scene set, only the transformer trains
(cross-entropy with label smoothing, `loop.fit`), and the checkpoint's ``meta`` records the
recipe, the training time and the held-out top-1 accuracy.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.scenes import SceneDataset
from ..errors import SalienceError
from ..models.zoo.scene_vit import build_scene_vit
from .features import FeatureCache, cached_features
from .loop import Schedule, fit
from .recipes import HELD_OUT_SEED, TRAIN_SEED, save_trained, shortened

LEVEL = 1  # C16, the ViT's patch grid


@dataclass(frozen=True)
class ClassifierRecipe:
    """How one scene classifier is trained."""

    model: dict
    schedule: Schedule
    n_train: int = 5000
    n_held_out: int = 1000
    label_smoothing: float = 0.1

    def to_dict(self) -> dict:
        return {"model": self.model, "schedule": asdict(self.schedule), "n_train": self.n_train,
                "n_held_out": self.n_held_out, "label_smoothing": self.label_smoothing, "level": LEVEL,
                "train_seed": TRAIN_SEED, "held_out_seed": HELD_OUT_SEED}


CLASSIFIER_RECIPES = {
    "scene-vit": ClassifierRecipe(
        model=dict(architecture="scene-vit", dim=192, depth=4, heads=6, mlp_ratio=4.0, dropout=0.1, input_size=224),
        schedule=Schedule(steps=800, batch_size=64, lr=5e-4, weight_decay=0.05, warmup=0.05, clip=1.0),
    ),
}


def classifier_recipe(name: str, steps: int | None = None, n_train: int | None = None) -> ClassifierRecipe:
    """A named recipe, optionally shortened (``steps``, ``n_train``)."""
    if name not in CLASSIFIER_RECIPES:
        raise SalienceError(f"no classifier recipe '{name}'; known: {', '.join(CLASSIFIER_RECIPES)}")
    return shortened(CLASSIFIER_RECIPES[name], steps, n_train)


def classification_features(work_dir: Path, n: int, seed: int, input_size: int, progress: bool) -> FeatureCache:
    """The cached C16 features of a classification scene set (shared by recipes using the same set)."""
    folder = work_dir / "features" / f"classification-seed{seed}-n{n}-{input_size}px-c16"
    return cached_features(SceneDataset(n, "classification", seed), folder, levels=(LEVEL,), input_size=input_size,
                           progress=progress)


def labels_of(cache: FeatureCache) -> torch.Tensor:
    """Each scene's class id (n,)."""
    return torch.cat([t["labels"] for t in cache.targets])


def top1(module, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> float:
    """Top-1 accuracy of ``module.head_forward`` on cached C16 features (float16 ok)."""
    with torch.no_grad():
        hits = sum((module.head_forward([features[i:i + batch_size].float()]).argmax(1) == labels[i:i + batch_size])
                   .sum().item() for i in range(0, len(labels), batch_size))
    return hits / len(labels)


def train_classifier(name: str, work_dir: str | Path, out: str | Path | None = None,
                     recipe: ClassifierRecipe | None = None, progress: bool = True, validate_every: int = 500) -> dict:
    """Train the classifier of recipe ``name`` (resuming in ``work_dir``); write its checkpoint.

    Returns the checkpoint's ``meta``: held-out top-1 accuracy over the whole held-out set,
    training seconds, steps, recipe. Validation during training uses its first 200 scenes.
    """
    recipe = recipe or classifier_recipe(name)
    work_dir = Path(work_dir)
    size = recipe.model["input_size"]
    train = classification_features(work_dir, recipe.n_train, TRAIN_SEED, size, progress)
    held_out = classification_features(work_dir, recipe.n_held_out, HELD_OUT_SEED, size, progress)
    class_names = json.loads((train.folder / "meta.json").read_text())["class_names"]
    torch.manual_seed(recipe.schedule.seed)
    module = build_scene_vit({**recipe.model, "num_classes": len(class_names)})
    train_x, train_y = train.load(LEVEL), labels_of(train)
    held_x, held_y = held_out.load(LEVEL), labels_of(held_out)

    def loss_fn(model, idx):
        logits = model.head_forward([train_x[idx].float()])
        loss = F.cross_entropy(logits, train_y[idx], label_smoothing=recipe.label_smoothing)
        return loss, {"acc": (logits.argmax(1) == train_y[idx]).float().mean().item()}

    def validate(model):
        return {"val_acc": top1(model, held_x[:200], held_y[:200])}

    run_dir = work_dir / "runs" / name
    started = time.perf_counter()
    log = fit(module, loss_fn, len(train), recipe.schedule, run_dir, recipe=recipe.to_dict(), progress=progress,
              description=name, validate=validate, validate_every=validate_every)
    module.eval()
    held_out_scores = {"top1": top1(module, held_x, held_y), "n": len(held_out)}
    return save_trained(module, class_names, recipe, log, held_out_scores, run_dir, out or run_dir / f"{name}.pt", started)
