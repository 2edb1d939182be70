"""Errors users can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import difflib


class SalienceError(Exception):
    """Base class for every error `salience` raises on bad input."""


class UnknownNameError(SalienceError, KeyError):
    """A method, model, metric or dataset name that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Known: {', '.join(sorted(known))}")
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ImageLoadError(SalienceError):
    """A file that is missing, not an image, or corrupt."""


class TargetError(SalienceError):
    """A target that cannot be applied to this model's output."""


class LayerNotFoundError(SalienceError):
    """A layer (CAM layer, attention module) that cannot be found in the model."""
