"""What the classifier and detector runners share: counts, stored keys, timing, seeding."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..models.model import Model
from .grid import ResolvedMethod
from .store import ResultStore


@dataclass
class RunStats:
    """What one process did: rows written, units computed, units skipped on resume, images of a
    detector without any kept detection, and one line per distinct failure."""

    rows: int = 0
    units: int = 0
    resumed: int = 0
    empty_images: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, line: str) -> None:
        """Record a failure line once."""
        if line not in self.errors:
            self.errors.append(line)


def done_by_image(store: ResultStore, model: str, method: ResolvedMethod) -> dict[str, set[tuple[str, str]]]:
    """image -> the (metric, metric params) stored for it under this model and method."""
    out: dict[str, set[tuple[str, str]]] = {}
    for image, metric, metric_key in store.done_keys(model, method.name, method.key):
        out.setdefault(image, set()).add((metric, metric_key))
    return out


def forward_seconds(model: Model, x: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds of one forward pass of ``x`` (after the batch's earlier forwards warmed up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            model(x)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]


def seed_unit(method: str, image_ids: Sequence[str]) -> None:
    """Seed torch from a unit's method and image ids, so a run and its resume draw the same numbers."""
    torch.manual_seed(zlib.crc32("|".join([method, *image_ids]).encode()))
