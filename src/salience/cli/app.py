"""`salience` on the command line: a thin Typer layer over the public API.

Bad input (unknown names, bad parameters, unusable targets or layers) ends with one red
line on stderr and a non-zero exit, never a traceback. Bad image files are reported one
line each and skipped.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import salience as sl

from .. import viz
from ..bench.cli import bench_command, evaluate_command
from ..data.scenes.cli import scenes_app
from ..errors import ImageLoadError, SalienceError, TargetError
from ..explanation import save_grids
from ..images import ImageBatch, _unique, expand_sources, load_image
from ..methods import REGISTRY, Explainer
from ..models import BUILTIN, DEFAULT_MODEL, PREFIXES
from ..models.model import Model
from ..preprocessing import RESIZE_MODES
from ..train.cli import train_app
from .detections import detect, save_detections

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    help="Saliency maps for vision models: what does the model look at?",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

EXIT_ERROR = 1  # bad input found while running (names, targets, layers, no usable image)
EXIT_USAGE = 2  # malformed options (``--param`` syntax, unknown parameter, device)


class UsageError(SalienceError):
    """A malformed or unusable command-line option."""


def parse_value(text: str) -> Any:
    """``--param`` value: bool (true/false), None (none), int, float, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["steps=50", "baseline=blur"]`` -> ``{"steps": 50, "baseline": "blur"}``."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param '{item}': expected KEY=VALUE")
        params[key.strip()] = parse_value(value)
    return params


def build_explainers(methods: list[str], params: dict[str, Any]) -> dict[str, Explainer]:
    """One explainer per method name; each gets the ``params`` its constructor accepts.

    A parameter no chosen method accepts is an error (a typo must not be silently ignored).
    """
    explainers, used = {}, set()
    for name in methods:
        cls = type(sl.get_explainer(name))  # resolves aliases; unknown names raise with a suggestion
        key = cls.name
        accepted = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        mine = {k: v for k, v in params.items() if takes_any or k in accepted and k != "self"}
        used |= set(mine)
        try:
            explainers[key] = cls(**mine)
        except (TypeError, ValueError) as error:
            raise UsageError(f"method '{key}': {error}") from None
    unused = sorted(set(params) - used)
    if unused:
        known = sorted({k for e in explainers.values() for k in inspect.signature(type(e).__init__).parameters} - {"self"})
        raise UsageError(f"no chosen method takes parameter '{unused[0]}'. Parameters: {', '.join(known)}")
    return explainers


def pick_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; check that an asked-for CUDA exists."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got '{device}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    return device


def configure(model: Model, cam_layer: Optional[str], resize: Optional[str]) -> Model:
    """The same network with another CAM layer and/or resize mode."""
    if cam_layer is None and resize is None:
        return model
    preprocess = model.preprocess if resize is None else replace(model.preprocess, mode=resize)
    return Model(
        model.module, preprocess, task=model.task, class_names=model.class_names,
        cam_layer=cam_layer, output_key=model.output_key, name=model.name,
    )


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    return typer.Exit(code)


@app.command()
def explain(
    paths: list[Path] = typer.Argument(..., help="Image files and/or folders of images.", show_default=False),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Bundled name, timm:NAME, hf:NAME or open_clip:ARCH/PRETRAINED."),
    method: Optional[str] = typer.Option(
        None, "--method", help="A method, or several comma separated (adds a grid). Default: gradcam; "
        "for detectors, none: the detections are drawn."
    ),
    target: str = typer.Option("top1", "--target", "-t", help="top1, topk:K, a class index or a class name; "
                               "for CLIP a prompt, or 'p1|p2|...' (best of them); detectors: all kept detections, or a detection index."),
    out_dir: Path = typer.Option(Path("out"), "--out", "-o", help="Output folder."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Images per model call."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    param: list[str] = typer.Option([], "--param", "-p", help="Method parameter KEY=VALUE (repeatable)."),
    cam_layer: Optional[str] = typer.Option(None, "--cam-layer", help="Layer for CAM methods (dotted name)."),
    resize: Optional[str] = typer.Option(None, "--resize", help=f"Resize mode: {', '.join(RESIZE_MODES)}."),
    cmap: str = typer.Option(viz.CMAP, "--cmap", help="Matplotlib colormap of the overlays."),
    score_threshold: Optional[float] = typer.Option(
        None, "--score-threshold", help="Detectors: keep detections scoring at least this (model default 0.5)."
    ),
):
    """Explain the model's prediction on each image; write overlays, raw maps and JSON.

    Writes per image and method `IMAGE_METHOD.png`, `.npy` and `.json` into --out, plus
    `IMAGE_grid.png` when several methods are given. Unreadable files are reported and
    skipped; the exit code is non-zero only if no image could be processed (or an option
    is wrong).
    """
    try:
        methods = [m for m in (method or "").split(",") if m.strip()]
        if resize is not None and resize not in RESIZE_MODES:
            raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got '{resize}'")
        explainers = build_explainers(methods or ["gradcam"], parse_params(param))
        files = expand_sources([str(p) for p in paths])
        if not files:
            raise ImageLoadError("no image files found in " + ", ".join(map(str, paths)))
        net = sl.load_model(model, device=pick_device(device))
        if net.task == "detection" and score_threshold is not None:
            net.score_threshold = score_threshold
        if net.task == "detection" and not methods:
            return run_detect(net, files, out_dir, batch_size, resize)
        net = configure(net, cam_layer, resize)
        n_done, written = run_explain(net, files, explainers, target, out_dir, batch_size, cmap)
    except UsageError as error:
        raise _fail(str(error), EXIT_USAGE)
    except (SalienceError, ValueError) as error:
        raise _fail(str(error), EXIT_ERROR)
    if n_done == 0:
        raise _fail(f"none of the {len(files)} files could be read as an image", EXIT_ERROR)
    skipped = len(files) - n_done
    out.print(
        f"Explained {n_done} image{'s' * (n_done != 1)} with {', '.join(explainers)}: "
        f"{len(written)} files written to {out_dir}/" + (f" ({skipped} skipped)" if skipped else "")
    )


def run_explain(
    model: Model, files: list, explainers: dict, target: str, out_dir: Path, batch_size: int, cmap: str
) -> tuple[int, list[str]]:
    """Explain ``files`` in batches with every explainer; return (images done, paths written)."""
    names = _unique([Path(f).stem for f in files])
    written: list[str] = []
    n_done = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("explaining", total=len(files) * len(explainers))
        for start in range(0, len(files), batch_size):
            chunk = list(zip(files[start:start + batch_size], names[start:start + batch_size]))
            batch = _load_batch(chunk, progress, strict=len(files) == 1)
            progress.advance(task, (len(chunk) - len(batch)) * len(explainers))
            if not len(batch):
                continue
            results = {}
            for name, explainer in explainers.items():
                progress.update(task, description=f"{name} [{start + 1}-{start + len(chunk)}/{len(files)}]")
                try:
                    results[name] = sl.explain(model, batch, explainer, target)
                except TargetError as error:
                    if model.task != "detection" or "no detections" not in str(error):
                        raise
                    out.print(f"{', '.join(batch.names)}: {error}")
                    progress.advance(task, len(batch) * len(explainers))
                    break
                written += results[name].save(out_dir, cmap=cmap)
                progress.advance(task, len(batch))
            if len(results) > 1:
                written += save_grids(results, out_dir, cmap=cmap)
            n_done += len(batch)
    return n_done, written


def run_detect(model, files: list, out_dir: Path, batch_size: int, resize: Optional[str]) -> None:
    """Draw each photo's detections (no method asked for): PNG + JSON."""
    if resize is not None:
        model.preprocess = replace(model.preprocess, mode=resize)
    names = _unique([Path(f).stem for f in files])
    written, n_done = [], 0
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        for start in range(0, len(files), batch_size):
            chunk = list(zip(files[start:start + batch_size], names[start:start + batch_size]))
            batch = _load_batch(chunk, progress, strict=len(files) == 1)
            if not len(batch):
                continue
            results = detect(model, batch)
            written += save_detections(model, batch, results, out_dir)
            for name, found in zip(batch.names, results):
                if not found:
                    out.print(f"{name}: no detection scored at least {model.score_threshold:g} "
                              "(lower it with --score-threshold)")
            n_done += len(batch)
    if n_done == 0:
        raise _fail(f"none of the {len(files)} files could be read as an image", EXIT_ERROR)
    out.print(f"Detected objects in {n_done} image{'s' * (n_done != 1)} with {model.name}: "
              f"{len(written)} files written to {out_dir}/")


def _load_batch(chunk: list[tuple[Any, str]], progress: Progress, strict: bool) -> ImageBatch:
    """Load the readable files of a chunk; report each unreadable one and skip it
    (``strict``: raise instead, for a run on a single file)."""
    images, names = [], []
    for path, name in chunk:
        try:
            images.append(load_image(path)[0])
            names.append(name)
        except ImageLoadError as error:
            if strict:
                raise
            progress.console.print(f"[yellow]skipped:[/yellow] {escape(str(error))}")
    return ImageBatch(images, names)


@app.command()
def methods():
    """List the explanation methods."""
    table = Table("name", "family", "description")
    for name, doc in sl.available_methods().items():
        table.add_row(name, REGISTRY[name].family, doc)
    out.print(table)


@app.command()
def models():
    """List the bundled models and the hub prefixes."""
    table = Table("name", "what")
    for name in sorted(BUILTIN):
        what = ("trained by `salience train` on generated scenes, shipped, no network" if name.startswith("scene-")
                else "bundled ImageNet weights, no network")
        table.add_row(name, what + (" (default)" if name == DEFAULT_MODEL else ""))
    hub = {"timm": ("NAME", "any timm image classifier (weights from the timm cache or hub)"),
           "hf": ("NAME", "a Hugging Face image classifier, CLIPModel or DETR-family detector: hub id or local folder"),
           "open_clip": ("NAME", "an open_clip CLIP model, ARCH/PRETRAINED (tag or local checkpoint), zero-shot over prompts"),
           "checkpoint": ("PATH", "a scene model trained with `salience train` (its .pt file)")}
    for prefix in PREFIXES:
        arg, what = hub.get(prefix, ("NAME", ""))
        table.add_row(f"{prefix}:{arg}", what)
    out.print(table)


app.command("evaluate")(evaluate_command)
app.command("bench")(bench_command)
app.add_typer(scenes_app, name="scenes")
app.add_typer(train_app, name="train")


def main() -> None:
    """Console entry point (``salience``)."""
    app(prog_name="salience")
