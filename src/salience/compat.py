"""Importing optional libraries that drag in torchvision.

timm, open_clip and pytorch-grad-cam import torchvision at import time, transformers lazily. Where the installed torchvision
does not match the installed torch (on a CPU-only torch with a CUDA torchvision wheel,
import fails with "operator torchvision::nms does not exist"), `import_optional` registers
the two missing operator schemas and imports again. torchvision's compiled operators stay
unavailable; nothing in salience uses them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from .errors import SalienceError

_EXTRAS = {"timm": "timm", "transformers": "transformers", "open_clip": "open_clip", "pycocotools": "coco",
           "skimage": "segments"}
_USE_TORCHVISION = {"timm", "transformers", "open_clip", "pytorch_grad_cam"}
_torchvision_patched = False


def _register_torchvision_schemas() -> None:
    global _torchvision_patched
    if _torchvision_patched:
        return
    import torch

    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 (kept alive below)
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_torchvision_lib"] = lib
    _torchvision_patched = True


def import_optional(name: str) -> ModuleType:
    """Import an optional dependency, with a clear message if it is not installed.

    For libraries that import torchvision, possibly lazily after their own import
    (transformers' image utilities), torchvision is imported and repaired first.
    """
    if name.split(".")[0] in _USE_TORCHVISION and importlib.util.find_spec("torchvision") is not None:
        import_optional("torchvision")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] != name.split(".")[0]:
            raise
        extra = _EXTRAS.get(name.split(".")[0], name)
        raise SalienceError(f"'{name}' is not installed: pip install 'salience[{extra}]'") from None
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.") or m == name
                    or m.startswith(name + ".")]:
            del sys.modules[mod]
        _register_torchvision_schemas()
        return importlib.import_module(name)
