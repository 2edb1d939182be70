"""Head-only checkpoints of the project's models on a frozen pretrained backbone.

A checkpoint is ``{"config", "class_names", "state_dict", "meta"}``; its state dict holds
everything but ``backbone.*``, whose weights come from the backbone's own pretrained file, so
the shipped models stay a few MB. ``config["architecture"]`` names the model; each
architecture registers how ``checkpoint:PATH`` rebuilds it (`register_architecture`), so this
module knows none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import SalienceError
from .model import Model

FIELDS = {"config", "class_names", "state_dict"}
#: architecture name -> ``loader(path, **kwargs)`` giving the `Model` of such a checkpoint.
ARCHITECTURE_LOADERS: dict[str, Callable[..., Model]] = {}


def register_architecture(name: str, loader: Callable[..., Model]) -> None:
    """Make ``checkpoint:PATH`` of a checkpoint whose config names ``name`` load with ``loader(path, **kwargs)``."""
    ARCHITECTURE_LOADERS[name] = loader


def head_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights: everything except the frozen backbone."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("backbone.")}


def save_head_checkpoint(module: nn.Module, class_names: Sequence[str], path: str | Path, meta: dict | None = None) -> None:
    """Write the checkpoint of ``module`` (which carries its ``config``) that `read_head_checkpoint` reads."""
    if len(class_names) != module.config["num_classes"]:
        raise SalienceError(f"{len(class_names)} class names for a model with {module.config['num_classes']} classes")
    torch.save({"config": dict(module.config), "class_names": list(class_names),
                "state_dict": head_state_dict(module), "meta": dict(meta or {})}, path)


def _read(path: Path, kind: str) -> dict:
    """The checkpoint dict at ``path``; anything else is refused with one line."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not FIELDS <= set(checkpoint):
        raise SalienceError(f"{path} is not a {kind} checkpoint (config, class_names, state_dict)")
    return checkpoint


def read_head_checkpoint(path: Path, kind: str, build: Callable[[dict], nn.Module]) -> tuple[nn.Module, list[str]]:
    """The module ``build(config)`` with the checkpoint's head weights, and its class names.

    ``kind`` names the model in errors: a file that is not such a checkpoint, or whose weights
    do not fit its config, is refused with one line.
    """
    checkpoint = _read(path, kind)
    module = build(checkpoint["config"])
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise SalienceError(f"{path} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return module, checkpoint["class_names"]


def load_checkpoint(path: str, **kwargs) -> Model:
    """The `Model` of any checkpoint written by ``salience train`` (``checkpoint:PATH``), loaded by
    the loader registered for the architecture its config records; ``kwargs`` go to that loader."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SalienceError(f"no checkpoint file {file}")
    architecture = _read(file, "salience")["config"].get("architecture")
    if architecture not in ARCHITECTURE_LOADERS:
        raise SalienceError(f"{file}: unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURE_LOADERS)}")
    return ARCHITECTURE_LOADERS[architecture](file, **kwargs)
