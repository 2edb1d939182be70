"""`SceneDataset`: ``n`` generated scenes as a `salience.data.Dataset` of `Sample`s."""

from __future__ import annotations

from PIL import Image

from ...errors import SalienceError
from ..registry import register_kind
from ..sample import Dataset, Sample
from .compose import Scene, SceneGenerator
from .config import SceneConfig


class SceneDataset(Dataset):
    """Scenes ``0 .. n-1`` of ``seed``; item i is always the same scene (see `compose`).

    Detection samples hold every instance; classification samples hold the main object
    only (``label`` = its class id, ``masks`` / ``boxes`` its ground truth), the distractors
    stay in `scene`. ``instance_classes`` are class ids into ``class_names``.

    Parameters
    ----------
    n : int
        Number of scenes.
    task : "detection" or "classification"
    seed : int
    config : SceneConfig or None
    """

    def __init__(self, n: int, task: str = "detection", seed: int = 0, config: SceneConfig | None = None):
        self.n, self.seed = int(n), int(seed)
        self.generator = SceneGenerator(task, config)
        self.task, self.config = self.generator.task, self.generator.config
        self.class_names = self.generator.class_names

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> Scene:
        """The full `Scene` of item ``i`` (classification: distractors included)."""
        if not -self.n <= i < self.n:
            raise IndexError(i)
        return self.generator.scene(self.seed, i % self.n)

    def __getitem__(self, i: int) -> Sample:
        scene = self.scene(i)
        keep = slice(None) if scene.main is None else slice(scene.main, scene.main + 1)
        classes = scene.classes[keep]
        label = None if scene.main is None else int(scene.classes[scene.main])
        return Sample(
            image=Image.fromarray(scene.image),
            label=label,
            label_name=None if label is None else self.class_names[label],
            masks=scene.masks[keep],
            boxes=scene.boxes[keep],
            instance_labels=[self.class_names[c] for c in classes],
            image_id=f"{i % self.n:06d}",
            instance_classes=classes,
        )


def _scenes(task: str, n: str = "100", seed: str = "0") -> SceneDataset:
    """``scenes:TASK[:N[:SEED]]``."""
    try:
        return SceneDataset(int(n), task, int(seed))
    except ValueError as err:
        raise SalienceError(f"dataset 'scenes:{task}:{n}:{seed}': N and SEED must be integers") from err


register_kind("scenes", _scenes, (1, 3), path_first=False)
