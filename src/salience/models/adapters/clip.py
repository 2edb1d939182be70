"""CLIP as a zero-shot classifier: `ClipModel` scores images against text prompts.

``model.set_prompts(["a photo of a dog", "a photo of a cat"])``, then ``model(x)`` gives
(B, P) logits ``logit_scale · cos(image embedding, prompt embedding)``, so every target
that works on a classifier works here: a prompt index, ``"top1"``, a prompt's text (the
prompts are the class names). A string target that is not one of the prompts becomes the
only prompt, and the explanation is then of that image–text similarity; ``"a|b|c"`` sets
the prompts ``a``, ``b``, ``c`` and explains the best one (zero-shot over them).

Only the image encoder runs in ``model(x)`` (`ZeroShotHead` is the module explainers
hook); prompts are embedded once, by the same CLIP's text tower, when they are set.
Loaders: ``open_clip:ARCH/PRETRAINED`` (`load_open_clip`, PRETRAINED a tag or a local
checkpoint) and ``hf:PATH`` of a ``CLIPModel`` (`load_hf_clip`, registered as a Hugging Face
family).
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...compat import import_optional
from ...errors import SalienceError, TargetError
from ...preprocessing import Preprocess
from ..anatomy import TokenAnatomy
from ..model import Model
from .anatomy_discovery import hf_anatomy, open_clip_anatomy
from .hf_common import loading_errors, processor_preprocess, register_hf_family
from .timm import RESAMPLE

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_TYPES = ("clip",)


class ZeroShotHead(nn.Module):
    """Images -> ``logit_scale · cos(image embedding, text_features)``, (B, P) logits.

    Parameters
    ----------
    image_encoder : nn.Module
        (B, 3, H, W) -> (B, D) image embeddings (CLIP's projected image features).
    logit_scale : float
        The (exponentiated) temperature CLIP multiplies cosine similarities by.
    """

    def __init__(self, image_encoder: nn.Module, logit_scale: float):
        super().__init__()
        self.image_encoder = image_encoder
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.register_buffer("text_features", torch.zeros(0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.image_encoder(x), dim=-1)
        return self.logit_scale * image @ self.text_features.to(image.dtype).T


class ClipModel(Model):
    """A CLIP image encoder with its text tower: a classifier over text prompts.

    Parameters
    ----------
    head : ZeroShotHead
        The image side; its module names are what CAM layers and anatomy refer to.
    text_encoder : nn.Module
        ``list of prompts -> (P, D)`` text embeddings (the same CLIP's text tower and tokenizer).
    preprocess : Preprocess
        The image preprocessing.
    prompts : list of str, optional
        Initial prompts (see `set_prompts`).
    """

    def __init__(self, head: ZeroShotHead, text_encoder: nn.Module, preprocess: Preprocess,
                 prompts: Sequence[str] | None = None, cam_layer: str | None = None, name: str = "clip",
                 anatomy: TokenAnatomy | None = None):
        super().__init__(head, preprocess, task="zero_shot", cam_layer=cam_layer, name=name, anatomy=anatomy)
        self.text_encoder = text_encoder.eval()
        self.class_names = []
        if prompts:
            self.set_prompts(prompts)

    @property
    def prompts(self) -> list[str]:
        return list(self.class_names)

    def set_prompts(self, prompts: Sequence[str]) -> "ClipModel":
        """Embed the prompts with the text tower; ``model(x)`` then scores them (in this order)."""
        prompts = [p.strip() for p in ([prompts] if isinstance(prompts, str) else prompts)]
        if not prompts or not all(prompts):
            raise TargetError("give at least one non-empty prompt")
        with torch.inference_mode():
            features = F.normalize(self.text_encoder(prompts).float(), dim=-1)
        self.module.text_features = features.to(self.device).clone()
        self.class_names = prompts
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.class_names:
            raise TargetError(f"{self.name} has no prompts: call set_prompts([...]) or give a prompt as the target")
        return super().__call__(x)

    def target_spec(self, spec: Any) -> Any:
        """Prompt texts in a target become prompts (see the module doc): ``"a|b"`` sets both
        and gives ``"top1"``; an unknown prompt becomes the only one; a list of texts (one
        per image) sets the prompts to the distinct texts when any is unknown."""
        if isinstance(spec, str):
            text = spec.strip()
            if "|" in text:
                self.set_prompts([p for p in text.split("|") if p.strip()])
                return "top1"
            if not (_is_class_spec(text) or text in self.class_names):
                self.set_prompts([text])
            return text
        if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, str) for s in spec):
            texts = [s.strip() for s in spec]
            if any(t not in self.class_names for t in texts):
                self.set_prompts(list(dict.fromkeys(texts)))
            return [self.class_names.index(t) for t in texts]
        return spec

    def to(self, device: str | torch.device) -> "ClipModel":
        super().to(device)
        self.text_encoder.to(device)
        return self

    def __repr__(self) -> str:
        return f"ClipModel({self.name!r}, prompts={len(self.class_names)}, input={self.preprocess.size})"


def _is_class_spec(text: str) -> bool:
    """``top1``, ``topk:K``, ``topK`` or an index: a target that reads the logits, not a prompt."""
    lower = text.lower()
    return (lower in ("top1", "top", "pred", "predicted") or lower.startswith("topk:")
            or (lower.startswith("top") and lower[3:].isdigit()) or lower.lstrip("-").isdigit())


# -- open_clip ---------------------------------------------------------------------------
class OpenClipTextEncoder(nn.Module):
    """Prompts -> open_clip text embeddings (the model's tokenizer and ``encode_text``)."""

    def __init__(self, clip: nn.Module, tokenizer):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer

    def forward(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.clip.parameters()).device
        return self.clip.encode_text(self.tokenizer(prompts).to(device))


def load_open_clip(name: str, resize: str = "resize", cam_layer: str | None = None,
                   prompts: Sequence[str] | None = None, **kwargs) -> ClipModel:
    """``open_clip:ARCH/PRETRAINED``, e.g. ``ViT-B-16/openai``, as a `ClipModel`.

    Parameters
    ----------
    name : str
        ``ARCH`` or ``ARCH/PRETRAINED``; PRETRAINED is an open_clip tag (weights from its
        cache or hub) or a path to a local checkpoint. ``ARCH`` alone: random weights.
    resize : str
        The `Preprocess` resize mode; size, mean, std and interpolation come from the
        model's preprocessing config.
    prompts : list of str, optional
        Initial prompts.
    **kwargs
        Passed to ``open_clip.create_model`` (``force_image_size=...``).
    """
    open_clip = import_optional("open_clip")
    arch, _, pretrained = name.partition("/")
    try:
        clip = open_clip.create_model(arch, pretrained=pretrained or None, **kwargs)
    except RuntimeError as err:
        if "not found" not in str(err).lower() and "unknown" not in str(err).lower():
            raise
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SalienceError(f"cannot load open_clip model '{name}': {err}.{hint}") from None
    except OSError as err:
        raise SalienceError(f"cannot load the weights of open_clip model '{name}': {err}") from None
    clip = clip.eval()
    config = open_clip.get_model_preprocess_cfg(clip)
    size = config.get("size", 224)
    preprocess = Preprocess(
        size=(size, size) if isinstance(size, int) else (int(size[0]), int(size[1])),
        mean=tuple(config.get("mean") or OPENAI_MEAN),
        std=tuple(config.get("std") or OPENAI_STD),
        mode=resize,
        crop_pct=1.0,
        resample=RESAMPLE.get(config.get("interpolation", "bicubic"), Image.BICUBIC),
    )
    head = ZeroShotHead(clip.visual, clip.logit_scale.exp().item())
    text = OpenClipTextEncoder(clip, open_clip.get_tokenizer(arch))
    return ClipModel(head, text, preprocess, prompts=prompts, cam_layer=cam_layer, name=f"open_clip:{name}",
                     anatomy=open_clip_anatomy(clip.visual, prefix="image_encoder."))


# -- Hugging Face ------------------------------------------------------------------------
class HFClipImageEncoder(nn.Module):
    """Images -> projected image embeddings of a Hugging Face ``CLIPModel``."""

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module, interpolate_pos_encoding: bool = False):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        self.interpolate_pos_encoding = interpolate_pos_encoding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=x, interpolate_pos_encoding=self.interpolate_pos_encoding).pooler_output
        return self.visual_projection(pooled)


class HFClipTextEncoder(nn.Module):
    """Prompts -> projected text embeddings of a Hugging Face ``CLIPModel`` and its tokenizer."""

    def __init__(self, clip: nn.Module, tokenizer):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer

    def forward(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.clip.parameters()).device
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        pooled = self.clip.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
        return self.clip.text_projection(pooled)


def load_hf_clip(name_or_path: str, resize: str = "resize", cam_layer: str | None = None,
                 interpolate_pos_encoding: bool = False, prompts: Sequence[str] | None = None,
                 tokenizer: Any = None, **kwargs) -> ClipModel:
    """A Hugging Face ``CLIPModel`` (hub id or ``save_pretrained`` folder) as a `ClipModel`.

    The tokenizer is loaded from the same place (``AutoTokenizer``) unless one is given;
    preprocessing comes from its image processor config. Default attention (SDPA); extra
    keyword arguments go to ``from_pretrained`` (``attn_implementation=...``).
    """
    transformers = import_optional("transformers")
    with loading_errors("Hugging Face CLIP model", name_or_path):
        clip = transformers.CLIPModel.from_pretrained(name_or_path, **kwargs).eval()
        tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(name_or_path)
    vision = clip.vision_model
    image_encoder = HFClipImageEncoder(vision, clip.visual_projection, interpolate_pos_encoding)
    head = ZeroShotHead(image_encoder, clip.logit_scale.exp().item())
    preprocess = processor_preprocess(name_or_path, clip.config.vision_config, resize)
    return ClipModel(head, HFClipTextEncoder(clip, tokenizer), preprocess, prompts=prompts, cam_layer=cam_layer,
                     name=f"hf:{name_or_path}", anatomy=hf_anatomy(vision, prefix="image_encoder.vision_model."))


def is_hf_clip(config) -> bool:
    """Whether a transformers config is a ``CLIPModel``'s."""
    return getattr(config, "model_type", None) in CLIP_TYPES


register_hf_family(is_hf_clip, load_hf_clip)
