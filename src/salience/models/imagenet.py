"""The ImageNet-1k class names, in class-index order, shipped with the package."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    text = resources.files("salience").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"imagenet_classes.txt should hold 1000 names, found {len(names)}")
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k labels, e.g. ``names[967] == "espresso"``.

    Each line is the WordNet lemma list of the class synset ("tabby, tabby cat"), made from
    timm's ``imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt``.
    """
    return list(_names())
