"""Find a transformer's `TokenAnatomy` from the module itself, one function per family.

Each function returns None for modules it does not recognise (CNNs), so loaders can call
it on anything. Names are dotted module names relative to the module passed in, with
``prefix`` prepended when that module sits inside a wrapper (CLIP's image encoder).
The CAM layer is the last block's first norm (its output: the token features the block's
attention reads), pytorch-grad-cam's convention for ViT and Swin.
"""

from __future__ import annotations

from torch import nn

from ..anatomy import TokenAnatomy

ATTENTION_NAMES = ("attn", "attention", "self_attn")
NORM1_NAMES = ("norm1", "layernorm_before", "layer_norm1", "ln_1")


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), nn.Module)), None)


def _from_blocks(blocks: list[tuple[str, nn.Module]], **fields) -> TokenAnatomy:
    """Blocks (name, module) with an attention child and a first norm -> anatomy."""
    attentions = [f"{name}.{_child(block, ATTENTION_NAMES)}" for name, block in blocks]
    last_name, last = blocks[-1]
    norm = _child(last, NORM1_NAMES)
    return TokenAnatomy(
        blocks=[name for name, _ in blocks],
        attentions=attentions,
        cam_layer=f"{last_name}.{norm}" if norm else last_name,
        **fields,
    )


def _is_block_list(module: nn.Module) -> bool:
    return (isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) > 0
            and all(_child(b, ATTENTION_NAMES) for b in module))


def timm_anatomy(module: nn.Module, prefix: str = "") -> TokenAnatomy | None:
    """timm ViT / DeiT / ViT with registers (``blocks``, ``num_prefix_tokens``) and Swin
    (``layers[i].blocks``, NHWC features, hierarchical); None for other models."""
    patch_embed = getattr(module, "patch_embed", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch is None:
        return None
    if hasattr(module, "num_prefix_tokens") and _is_block_list(getattr(module, "blocks", None)):
        blocks = [(f"{prefix}blocks.{i}", b) for i, b in enumerate(module.blocks)]
        return _from_blocks(blocks, patch_size=_pair(patch), prefix_tokens=int(module.num_prefix_tokens))
    stages = getattr(module, "layers", None)
    if isinstance(stages, nn.Sequential) and all(_is_block_list(getattr(s, "blocks", None)) for s in stages):
        blocks = [(f"{prefix}layers.{i}.blocks.{j}", b) for i, s in enumerate(stages) for j, b in enumerate(s.blocks)]
        return _from_blocks(blocks, patch_size=_pair(patch), prefix_tokens=0, layout="nhwc", hierarchical=True)
    return None


def hf_anatomy(module: nn.Module, prefix: str = "") -> TokenAnatomy | None:
    """Hugging Face ViT, DeiT (class + distillation token) and CLIP vision towers: the
    embeddings module with a patch size, and the first list of blocks with attention."""
    embeddings = next((m for n, m in module.named_modules() if n.split(".")[-1] == "embeddings"), None)
    if embeddings is None:
        return None
    patch = getattr(embeddings, "patch_size", None) or getattr(
        getattr(embeddings, "patch_embeddings", None), "patch_size", None)
    block_list = next(((n, m) for n, m in module.named_modules() if _is_block_list(m)), None)
    if patch is None or block_list is None:
        return None
    tokens = ("cls_token", "class_embedding", "distillation_token")
    prefix_tokens = sum(getattr(embeddings, t, None) is not None for t in tokens)
    registers = getattr(embeddings, "register_tokens", None)
    if registers is not None:
        prefix_tokens += registers.shape[-2]
    name, blocks = block_list
    named = [(f"{prefix}{name}.{i}", b) for i, b in enumerate(blocks)]
    return _from_blocks(named, patch_size=_pair(patch), prefix_tokens=prefix_tokens)


def open_clip_anatomy(visual: nn.Module, prefix: str = "") -> TokenAnatomy | None:
    """open_clip's ``VisionTransformer`` (``conv1`` patches, ``transformer.resblocks``);
    timm towers inside open_clip (``visual.trunk``) go through `timm_anatomy`."""
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        return timm_anatomy(trunk, prefix=f"{prefix}trunk.")
    resblocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if not _is_block_list(resblocks) or getattr(visual, "patch_size", None) is None:
        return None
    if not getattr(visual.transformer, "batch_first", True):
        return None  # sequence-first token features: not a layout the anatomy describes
    blocks = [(f"{prefix}transformer.resblocks.{i}", b) for i, b in enumerate(resblocks)]
    prefix_tokens = 1 if getattr(visual, "class_embedding", None) is not None else 0
    return _from_blocks(blocks, patch_size=_pair(visual.patch_size), prefix_tokens=prefix_tokens)
