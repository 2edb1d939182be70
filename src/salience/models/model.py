"""`Model`: an `nn.Module` with its task, preprocessing, class names and anatomy.

Explainers never touch the raw module's output format or guess layers themselves: they ask
the `Model` for logits (`model(x)`), for the CAM layer (`model.cam_layer`) and for the
preprocessing (`model.prepare(images)`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LayerNotFoundError
from ..images import ImageBatch
from ..preprocessing import Geometry, Preprocess
from .anatomy import TokenAnatomy
from .outputs import to_logits

TASKS = ("classification", "zero_shot", "detection")


class Model:
    """A wrapped network, ready to be explained.

    Parameters
    ----------
    module : nn.Module
        The network. It is put in eval mode.
    preprocess : Preprocess
        Input size, normalisation and resize mode.
    task : str
        ``classification`` (logits out), ``zero_shot`` or ``detection``.
    class_names : list of str, optional
        One name per output class.
    cam_layer : str, optional
        Dotted name of the layer CAM methods use; found automatically when omitted
        (the anatomy's CAM layer for transformers, else the last module that outputs a
        spatial (B, C, h, w) map with h·w > 1).
    output_key : str, optional
        Which entry of a dict-like output holds the logits.
    name : str
        A display name.
    anatomy : TokenAnatomy, optional
        The token layout of a transformer (None for CNNs); adapters fill it in.
    forward_kwargs : dict, optional
        Keyword arguments of every call of the module (e.g. Hugging Face's
        ``interpolate_pos_encoding=True`` for inputs of another size).
    """

    def __init__(
        self,
        module: nn.Module,
        preprocess: Preprocess,
        task: str = "classification",
        class_names: Sequence[str] | None = None,
        cam_layer: str | None = None,
        output_key: str | None = None,
        name: str = "model",
        anatomy: TokenAnatomy | None = None,
        forward_kwargs: dict[str, Any] | None = None,
    ):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got '{task}'")
        self.module = module.eval()
        self.preprocess = preprocess
        self.task = task
        self.class_names = list(class_names) if class_names is not None else None
        self.output_key = output_key
        self.name = name
        self.anatomy = anatomy
        self.forward_kwargs = dict(forward_kwargs or {})
        self._cam_layer_name = cam_layer
        if cam_layer is not None:
            self.layer(cam_layer)  # fail early on a wrong name

    # -- running -----------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> Any:
        """The normalised output for a preprocessed batch: logits for classifiers."""
        return self.postprocess(self.module(x, **self.forward_kwargs))

    def target_spec(self, spec: Any) -> Any:
        """A user's target spec as this model reads it (unchanged here; `ClipModel` turns
        prompt texts into prompts)."""
        return spec

    def postprocess(self, raw_output: Any) -> Any:
        """Turn the module's raw output into what targets read (logits for classifiers)."""
        return to_logits(raw_output, self.output_key)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> "Model":
        self.module.to(device)
        return self

    def prepare(self, images: ImageBatch) -> tuple[torch.Tensor, list[Geometry]]:
        """Photos -> preprocessed batch on the model's device, and each photo's geometry."""
        x, geometries = self.preprocess(images.originals)
        return x.to(self.device), geometries

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    # -- anatomy -----------------------------------------------------------------------
    def layer(self, name: str) -> nn.Module:
        """The submodule with this dotted name, or a clear error listing close names."""
        modules = dict(self.module.named_modules())
        if name not in modules:
            import difflib

            close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.5)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise LayerNotFoundError(f"layer '{name}' not found in {self.name}.{hint}")
        return modules[name]

    @property
    def cam_layer_name(self) -> str:
        if self._cam_layer_name is None and self.anatomy is not None and self.anatomy.cam_layer:
            self._cam_layer_name = self.anatomy.cam_layer
        if self._cam_layer_name is None:
            self._cam_layer_name = find_last_spatial_layer(self.module, self.preprocess.size, self.device)
        return self._cam_layer_name

    @property
    def cam_layer(self) -> nn.Module:
        return self.layer(self.cam_layer_name)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, task={self.task!r}, input={self.preprocess.size})"


def find_last_spatial_layer(module: nn.Module, size: tuple[int, int], device: torch.device) -> str:
    """Dotted name of the module whose (B, C, h, w) output, h·w > 1, comes last in a forward.

    Found by one forward pass on a blank image. Modules called more than once per forward
    (shared activations) are skipped: hooking them would capture several maps. Among
    modules that finish at the same time (a block and its container), the outermost one
    finishes last and is chosen, which is the usual choice (e.g. ``layer4`` of a ResNet).
    """
    order: list[str] = []
    calls: dict[str, int] = {}
    names = {m: n for n, m in module.named_modules() if n}

    def hook(mod, _inputs, output):
        name = names[mod]
        calls[name] = calls.get(name, 0) + 1
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2] * output.shape[3] > 1:
            order.append(name)

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, *size, device=device))
    finally:
        for h in handles:
            h.remove()
    candidates = [n for n in order if calls[n] == 1]
    if not candidates:
        raise LayerNotFoundError(
            "no layer with a spatial (B, C, h, w) output found for CAM methods; name one with cam_layer=..."
        )
    return candidates[-1]
