"""What to explain: each target row turns model output into one differentiable score.

A `Target` holds N rows; row r belongs to image ``image_index[r]``. Methods feed the model
batches in which sample i stands for target row ``rows[i]`` (IG steps, noise samples and
masked copies repeat rows), and call ``target.score(output, rows)`` -> one score per sample.

`resolve_target` turns what a user writes into a `Target`:

- an int (same class for every image), a list of ints (one per image),
- ``"top1"``, ``"topk:K"`` (K rows per image, best first), a class name,
- any callable ``output -> score per sample`` (applied to whole batches, so it must treat
  every sample alike, like ``lambda logits: logits[:, 281]``), or a list of callables, one
  per image, each called on one sample's output (the pytorch-grad-cam convention),
- a `Target` instance, used as is.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..errors import TargetError


class Target:
    """Base class: N rows, each belonging to one image, each giving one score per sample."""

    image_index: torch.Tensor  # (N,) long

    def score(self, output: Any, rows: torch.Tensor) -> torch.Tensor:
        """Scores (len(rows),) of a model output whose sample i belongs to row rows[i]."""
        raise NotImplementedError

    def labels(self) -> list[str]:
        """A short human label per row (class name, prompt, detection)."""
        return [f"target {r}" for r in range(len(self))]

    def __len__(self) -> int:
        return int(self.image_index.numel())


class ClassTarget(Target):
    """The logit of one class per row."""

    def __init__(self, classes: torch.Tensor, image_index: torch.Tensor, class_names: Sequence[str] | None = None):
        self.classes = classes.long()
        self.image_index = image_index.long()
        self.class_names = class_names

    def score(self, output: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        logits = _logits(output)
        return logits.gather(1, self.classes.to(logits.device)[rows.to(logits.device)][:, None])[:, 0]

    def labels(self) -> list[str]:
        names = self.class_names
        return [names[c] if names is not None else f"class {c}" for c in self.classes.tolist()]


class CallableTarget(Target):
    """A user function on the batch output, or one function per image on its own output."""

    def __init__(self, fn: Callable | Sequence[Callable], n_images: int):
        self.fn = fn
        self.image_index = torch.arange(n_images)
        if not callable(fn) and len(fn) != n_images:
            raise TargetError(f"got {len(fn)} target functions for {n_images} images")

    def score(self, output: Any, rows: torch.Tensor) -> torch.Tensor:
        if callable(self.fn):
            scores = self.fn(output)
        else:
            scores = torch.stack([self.fn[r](_sample(output, i)).reshape(()) for i, r in enumerate(rows.tolist())])
        if not isinstance(scores, torch.Tensor) or scores.shape != (len(rows),):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise TargetError(f"a target function must return one score per sample, shape ({len(rows)},); got {got}")
        return scores

    def labels(self) -> list[str]:
        name = getattr(self.fn, "__name__", "custom")
        return [name if callable(self.fn) else getattr(f, "__name__", "custom") for f in (
            [self.fn] * len(self) if callable(self.fn) else self.fn)]


def _logits(output: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        raise TargetError("a class target needs (batch, classes) logits from the model")
    return output


def _sample(output: Any, i: int) -> Any:
    if isinstance(output, torch.Tensor):
        return output[i]
    if isinstance(output, (tuple, list)):
        return type(output)(_sample(o, i) for o in output)
    if isinstance(output, dict):
        return {k: _sample(v, i) for k, v in output.items()}
    raise TargetError(f"cannot split a model output of type {type(output).__name__} per sample")


def _class_index(name: str, class_names: Sequence[str] | None) -> int:
    if class_names is None:
        raise TargetError(f"target '{name}': this model has no class names; give a class index")
    wanted = name.strip().lower()
    for i, full in enumerate(class_names):
        if full.lower() == wanted or wanted in [part.strip().lower() for part in full.split(",")]:
            return i
    import difflib

    close = difflib.get_close_matches(wanted, [c.lower() for c in class_names], n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise TargetError(f"unknown class name '{name}'.{hint}")


def resolve_target(spec: Any, output: Any, class_names: Sequence[str] | None = None) -> Target:
    """Turn a user's target spec into a `Target`, given the model output on the batch.

    ``output`` is the model's output on the clean batch (logits for classifiers); it decides
    ``top1`` / ``topk`` and checks class indices against the number of classes.
    """
    if isinstance(spec, Target):
        return spec
    n_images = output.shape[0] if isinstance(output, torch.Tensor) else None
    if callable(spec) or (isinstance(spec, (list, tuple)) and spec and all(callable(s) for s in spec)):
        if n_images is None:
            raise TargetError("cannot count the images in this model output; pass a Target instance")
        return CallableTarget(spec, n_images)
    logits = _logits(output)
    n_classes = logits.shape[1]
    index = torch.arange(n_images)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("top1", "top", "pred", "predicted"):
            return ClassTarget(logits.argmax(1).cpu(), index, class_names)
        if text.startswith("topk:") or text.startswith("top") and text[3:].isdigit():
            k_text = text.split(":", 1)[1] if ":" in text else text[3:]
            if not k_text.isdigit() or not 1 <= int(k_text) <= n_classes:
                raise TargetError(f"target '{spec}': K must be an integer in 1..{n_classes}")
            k = int(k_text)
            top = logits.topk(k, dim=1).indices.cpu()
            return ClassTarget(top.reshape(-1), index.repeat_interleave(k), class_names)
        if text.lstrip("-").isdigit():
            spec = int(text)
        else:
            c = _class_index(spec, class_names)
            return ClassTarget(torch.full((n_images,), c), index, class_names)
    if isinstance(spec, torch.Tensor):
        spec = spec.tolist()
    if isinstance(spec, int):
        spec = [spec] * n_images
    if isinstance(spec, (list, tuple)) and all(isinstance(s, int) for s in spec):
        if len(spec) != n_images:
            raise TargetError(f"got {len(spec)} target classes for {n_images} images")
        bad = [s for s in spec if not 0 <= s < n_classes]
        if bad:
            raise TargetError(f"target class {bad[0]} out of range: the model has {n_classes} classes (0..{n_classes - 1})")
        return ClassTarget(torch.tensor(spec), index, class_names)
    raise TargetError(f"cannot use {spec!r} as a target")
