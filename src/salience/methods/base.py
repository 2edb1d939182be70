"""`Explainer`: the one call signature every method shares, and the method registry.

A method is a small subclass that sets ``name`` and overrides `attribute`; `register` puts
it in the registry under that name.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, ClassVar

import torch

from ..errors import UnknownNameError
from ..explanation import Explanation
from ..models.model import Model
from ..targets import ClassTarget, Target, resolve_target

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


def available_methods() -> dict[str, str]:
    """Registered method names with the first line of their docstring."""
    return {n: (inspect.getdoc(c) or "").splitlines()[0] for n, c in sorted(REGISTRY.items())}


class Explainer:
    """Base class of all methods.

    Call it as ``explainer(model, x, target) -> Explanation``: ``x`` is a preprocessed
    (B, 3, H, W) batch, ``target`` anything `resolve_target` accepts. Subclasses implement
    `attribute`, which receives one input row per target row.

    Parameters
    ----------
    batch_size : int
        How many samples go through the model at once inside a method (IG steps, noise
        samples, masked images). Bounds memory.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""

    def __init__(self, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size

    @property
    def params(self) -> dict[str, Any]:
        """The constructor parameters and their values (recorded in every Explanation)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def attribute(self, model: Model, x: torch.Tensor, target: Target) -> torch.Tensor:
        """Raw maps (N, H, W) for inputs ``x`` (N, 3, H, W), sample i explaining target row i."""
        raise NotImplementedError

    def __call__(self, model: Model, x: torch.Tensor, target: Any = "top1") -> Explanation:
        x = x.to(model.device)
        start = time.perf_counter()
        with torch.inference_mode():
            output = model(x)
        target = resolve_target(target, output, model.class_names)
        rows = torch.arange(len(target))
        index = target.image_index.to(x.device)
        with torch.inference_mode():
            scores = target.score(_rows_of(output, index), rows).float()
            probabilities = None
            if isinstance(target, ClassTarget) and isinstance(output, torch.Tensor):
                probabilities = output.float().softmax(1)[index, target.classes.to(x.device)]
        x_rows = x[index] if len(target) != x.shape[0] or not torch.equal(index.cpu(), rows) else x
        maps = self.attribute(model, x_rows, target)
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
            classes=target.classes.cpu() if isinstance(target, ClassTarget) else None,
            model_name=model.name,
        )


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
