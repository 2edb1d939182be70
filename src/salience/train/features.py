"""The frozen backbone's features of a generated scene set, computed once and kept on disk.

The project's transformers train only their heads on a frozen EfficientNet-Lite0, so its
feature maps are computed once per scene set and stored as float16 ``.npy`` files (one
per feature level) next to the targets. `cached_features` fills them in chunks and records
how many scenes are done, so an interrupted run resumes; a finished cache is reused as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..data.sample import Sample
from ..data.scenes import SceneDataset
from ..errors import SalienceError
from ..models.zoo.lite_features import LITE_MEAN, LITE_STD, LiteFeatures
from ..preprocessing import Preprocess
from .loop import atomic_save


def scene_tensor(samples: Sequence[Sample], size: int) -> torch.Tensor:
    """The samples' images as a normalised (n, 3, size, size) batch (EfficientNet-Lite's mean/std)."""
    return Preprocess(size=(size, size), mean=LITE_MEAN, std=LITE_STD)([s.image for s in samples])[0]


def scene_targets(sample: Sample) -> dict[str, torch.Tensor]:
    """A sample's objects: ``labels`` (K,) and ``boxes`` (K, 4) normalised (cx, cy, w, h);
    a classification sample has its main object only."""
    w, h = sample.image.size
    xyxy = torch.as_tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4) / torch.tensor([w, h, w, h])
    cxcywh = torch.cat(((xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]), -1)
    labels = torch.as_tensor(sample.instance_classes if sample.label is None else [sample.label], dtype=torch.long)
    return {"labels": labels, "boxes": cxcywh}


class FeatureCache:
    """Stored features: ``levels[l]`` (n, C_l, h_l, w_l) float16 arrays (memory-mapped) and
    the per-scene ``targets``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.levels = [np.load(self.folder / f"level{l}.npy", mmap_mode="r") for l in self.meta["levels"]]
        self.targets = torch.load(self.folder / "targets.pt", weights_only=True)

    def __len__(self) -> int:
        return self.meta["n"]

    def load(self, level: int) -> torch.Tensor:
        """Backbone level ``level`` (0: C8, 1: C16, 2: C32) of every scene, as a float16 tensor in RAM."""
        if level not in self.meta["levels"]:
            raise SalienceError(f"{self.folder} holds levels {self.meta['levels']}, not {level}")
        return torch.from_numpy(np.array(self.levels[self.meta["levels"].index(level)]))


def cached_features(dataset: SceneDataset, folder: str | Path, levels: Sequence[int] = (0, 1, 2),
                    input_size: int = 256, batch_size: int = 32, progress: bool = True) -> FeatureCache:
    """Backbone features of every scene of ``dataset`` at ``folder``, computing what is missing.

    The folder's ``meta.json`` names the scene set (task, n, seed, config) and the levels;
    a folder made for another set is an error, never silently reused.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    identity = {"task": dataset.task, "n": len(dataset), "seed": dataset.seed, "config": dataset.config.to_dict(),
                "levels": list(levels), "input_size": input_size, "class_names": list(dataset.class_names)}
    meta_path, progress_path = folder / "meta.json", folder / "progress.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in identity} != identity:
            raise SalienceError(f"{folder} holds features of another scene set; use another folder")
        if meta.get("complete"):
            return FeatureCache(folder)
    backbone = LiteFeatures("efficientnet_lite0")
    n = len(dataset)
    with torch.inference_mode():
        shapes = [f.shape[1:] for f in backbone(torch.zeros(1, 3, input_size, input_size))]
    arrays = []
    for l in levels:
        path = folder / f"level{l}.npy"
        shape = (n, *shapes[l])
        if path.exists() and progress_path.exists():
            arrays.append(np.load(path, mmap_mode="r+"))
        else:
            arrays.append(np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape))
    done = json.loads(progress_path.read_text())["done"] if progress_path.exists() else 0
    meta_path.write_text(json.dumps({**identity, "complete": False}))
    targets = torch.load(folder / "targets.pt", weights_only=True) if (folder / "targets.pt").exists() and done else []
    targets = targets[:done]
    bar = Progress(TextColumn("[bold]backbone features"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), disable=not progress)
    with bar, torch.inference_mode():
        task = bar.add_task("features", total=n, completed=done)
        for start in range(done, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            samples = [dataset[i] for i in idx]
            feats = backbone(scene_tensor(samples, input_size))
            for array, l in zip(arrays, levels):
                array[idx[0]:idx[-1] + 1] = feats[l].numpy().astype(np.float16)
            for array in arrays:
                array.flush()
            targets.extend(scene_targets(s) for s in samples)
            atomic_save(targets, folder / "targets.pt")
            progress_path.write_text(json.dumps({"done": idx[-1] + 1}))
            bar.update(task, completed=idx[-1] + 1)
    meta_path.write_text(json.dumps({**identity, "complete": True}))
    return FeatureCache(folder)
