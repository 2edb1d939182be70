"""`Explainer`: the one call signature every method shares, and the method registry.

A method is a small subclass that sets ``name`` and overrides `attribute`; `register` puts
it in the registry under that name.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, ClassVar

import torch

from ..errors import SalienceError, UnknownNameError
from ..explanation import Explanation
from ..models.model import Model
from ..targets import CallableTarget, ClassTarget, DetectionTarget, Target, resolve_detection_target, resolve_target

REGISTRY: dict[str, type["Explainer"]] = {}
ALIASES: dict[str, str] = {}


def register(cls: type["Explainer"]) -> type["Explainer"]:
    """Class decorator: make a method available by its ``name`` (and its ``aliases``)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    ALIASES.update({alias: cls.name for alias in cls.aliases})
    return cls


def get_explainer(name: str, **params: Any) -> "Explainer":
    """An explainer by registered name, with its parameters."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise UnknownNameError("method", name, list(REGISTRY))
    return REGISTRY[key](**params)


def available_methods(task: str | None = None) -> dict[str, str]:
    """Registered method names with the first line of their docstring (those for ``task`` if given)."""
    return {n: (inspect.getdoc(c) or "").splitlines()[0] for n, c in sorted(REGISTRY.items())
            if task is None or task in c.tasks}


def check_task(explainer: "Explainer", model: Model) -> None:
    """A clear error when a method does not apply to the model's task, naming those that do."""
    if model.task not in explainer.tasks:
        fitting = ", ".join(available_methods(model.task))
        raise SalienceError(f"'{explainer.name}' does not explain {model.task} models ({model.name}); "
                            f"methods that do: {fitting}")


class Explainer:
    """Base class of all methods.

    Call it as ``explainer(model, x, target) -> Explanation``: ``x`` is a preprocessed
    (B, 3, H, W) batch, ``target`` anything `resolve_target` accepts. Subclasses implement
    `attribute`, which receives one input row per target row.

    Parameters
    ----------
    batch_size : int or None
        How many samples go through the model at once inside a method (IG steps, noise
        samples, masked images). Bounds memory. None: a per-device default (`batch_for`).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""
    #: True when `attribute` scores every row first on that row's clean input (gradient and
    #: CAM methods): the explanation's clean scores and a ``"top1"`` or class-name target are
    #: then read from that pass, and `__call__` spends no forward pass of its own.
    reads_clean_output: ClassVar[bool] = False
    #: The model tasks the method explains.
    tasks: ClassVar[tuple[str, ...]] = ("classification", "zero_shot", "detection")

    def __init__(self, batch_size: int | None = 32):
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size

    def batch_for(self, device: torch.device, cpu: int, gpu: int) -> int:
        """``batch_size``, or when it is None the default for this device (CPU batches of
        inference-only forwards are memory-bound here, so their defaults are small)."""
        return self.batch_size or (cpu if device.type == "cpu" else gpu)

    @property
    def params(self) -> dict[str, Any]:
        """The constructor parameters and their values (recorded in every Explanation)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Raw maps (N, H, W) for inputs ``x`` (N, 3, H, W), sample i explaining target row i."""
        raise NotImplementedError

    def __call__(self, model: Model, x: torch.Tensor, target: Any = "top1") -> Explanation:
        check_task(self, model)
        x = x.to(model.device)
        start = time.perf_counter()
        target = model.target_spec(target)
        if (self.reads_clean_output and model.task in ("classification", "zero_shot")
                and one_row_per_image(target, x.shape[0])):
            recorder = CleanPassTarget(target, model.class_names, x.shape[0])
            maps = self.attribute(model, x, recorder)
            target, output = recorder.resolved()
        else:
            with torch.inference_mode():
                output = model(x)
            target = resolve_for(model, target, output)
            index = target.image_index.to(x.device)
            x_rows = x[index] if len(target) != x.shape[0] or not torch.equal(index.cpu(), torch.arange(len(target))) else x
            maps = self.attribute(model, x_rows, target)
        rows = torch.arange(len(target))
        index = target.image_index.to(x.device)
        with torch.inference_mode():
            scores = target.score(_rows_of(output, index), rows).float()
            probabilities = None
            if isinstance(target, ClassTarget) and isinstance(output, torch.Tensor):
                probabilities = output.float().softmax(1)[index, target.classes.to(x.device)]
        if maps.shape != (len(target), *x.shape[-2:]):
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(maps.shape)}")
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        seconds = time.perf_counter() - start
        return Explanation(
            maps=maps.detach().float(),
            image_index=target.image_index.cpu(),
            labels=target.labels(),
            method=self.name,
            params=self.params,
            seconds=seconds,
            scores=scores.detach(),
            probabilities=None if probabilities is None else probabilities.detach(),
            classes=target.classes.cpu() if isinstance(target, (ClassTarget, DetectionTarget)) else None,
            boxes=getattr(target, "boxes", None),
            queries=getattr(target, "queries", None),
            model_name=model.name,
        )


def resolve_for(model: Model, spec: Any, output: Any) -> Target:
    """The target rows for a model's clean output: classes, or a detector's kept detections."""
    if model.task == "detection":
        selections = output.select(model.score_threshold, model.top_k)
        return resolve_detection_target(spec, selections, model.class_names)
    return resolve_target(spec, output, model.class_names)


def one_row_per_image(spec: Any, n_images: int) -> bool:
    """Whether a target spec gives exactly one row per image, in image order."""
    if isinstance(spec, Target):
        return torch.equal(spec.image_index.cpu(), torch.arange(n_images))
    if isinstance(spec, str):
        text = spec.strip().lower()
        return not text.startswith("top") or text in ("top", "top1", "topk:1")
    if isinstance(spec, (list, tuple)):
        return len(spec) == n_images
    return isinstance(spec, int) or callable(spec)


class CleanPassTarget(Target):
    """A target resolved, row by row, from the first output each row is scored on.

    Used with explainers whose `attribute` scores every row first on its clean input
    (`Explainer.reads_clean_output`): that output is recorded as it passes, so neither the
    target (``"top1"``, a class name) nor the explanation's clean scores need a forward
    pass of their own. `resolved` gives the plain target and the recorded clean output.
    """

    def __init__(self, spec: Any, class_names, n_images: int):
        self.spec = spec
        self.class_names = class_names
        self.image_index = torch.arange(n_images)
        self.fixed: Target | None = None  # a target that needs no output to resolve
        if isinstance(spec, Target) and not isinstance(spec, ClassTarget):
            self.fixed = spec
        elif callable(spec) or (isinstance(spec, (list, tuple)) and all(callable(s) for s in spec)):
            self.fixed = CallableTarget(spec, n_images)
        self.classes = torch.full((n_images,), -1, dtype=torch.long)
        self.clean: torch.Tensor | None = None
        self.seen = torch.zeros(n_images, dtype=torch.bool)

    def score(self, output: Any, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.cpu()
        first = ~self.seen[rows]
        if first.any():
            self._record(output, rows[first], first)
        return self._target().score(output, rows)

    def _record(self, output: Any, new_rows: torch.Tensor, first: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError("reading the clean pass needs a tensor output")
        clean = output[first.to(output.device)].detach()
        if self.clean is None:
            self.clean = clean.new_zeros(len(self.seen), *clean.shape[1:])
        self.clean[new_rows.to(clean.device)] = clean
        self.seen[new_rows] = True
        if self.fixed is None:
            spec = self.spec
            if isinstance(spec, (list, tuple)):
                spec = [spec[r] for r in new_rows.tolist()]
            self.classes[new_rows] = resolve_target(spec, clean, self.class_names).classes

    def _target(self) -> Target:
        return self.fixed or ClassTarget(self.classes.clone(), self.image_index, self.class_names)

    def resolved(self) -> tuple[Target, torch.Tensor]:
        """The resolved target and the clean output (one sample per image)."""
        if not bool(self.seen.all()):
            raise RuntimeError("the explainer did not score every row on its clean input")
        return self._target(), self.clean


def _rows_of(output: Any, index: torch.Tensor) -> Any:
    """Select samples of a model output (tensor, tuple, dict, or an object with ``index``)."""
    if isinstance(output, torch.Tensor):
        return output[index]
    if isinstance(output, (tuple, list)):
        return type(output)(_rows_of(o, index) for o in output)
    if isinstance(output, dict):
        return {k: _rows_of(v, index) for k, v in output.items()}
    if hasattr(output, "index"):
        return output.index(index)
    raise TypeError(f"cannot select samples of a {type(output).__name__} output")


def batches(n: int, size: int):
    """Slices covering range(n) in chunks of ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
