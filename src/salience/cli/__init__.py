"""The ``salience`` command (Typer): `app` (explain, methods, models; the sub-commands of
`salience.bench`, `salience.train` and `salience.data.scenes` are their own ``cli`` modules)
and `detections` (a detector's detections drawn and written, ``salience explain`` with no method)."""

from .app import main

__all__ = ["main"]
