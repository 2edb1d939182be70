"""Capturing the self-attention probabilities of a transformer, fused attention included.

Modern ViTs (timm, Hugging Face with its default ``sdpa`` attention, open_clip through
``nn.MultiheadAttention``) never materialise their attention matrix: they call the fused
``torch.nn.functional.scaled_dot_product_attention`` (SDPA). `capture_attention` intercepts
those calls with a `torch.overrides.TorchFunctionMode`, so no model code is patched and
every architecture that attends through SDPA is covered:

- ``grad=False``: the real SDPA computes the output (outputs are bit-identical) and
  ``softmax(q·kᵀ·scale + mask)`` is computed on the side without autograd; with
  ``exact_outputs=False`` the output is ``A @ V`` from that map instead (within rounding,
  one attention computation per layer instead of two).
- ``grad=True``: the output is computed explicitly as ``A @ V``, so each recorded map ``A``
  is part of the autograd graph and ``torch.autograd.grad(score, record.maps)`` works
  (outputs equal the fused ones within float rounding). When nothing before the first
  attention requires grad (frozen parameters, plain input), the first map is made a leaf
  that requires grad, so the graph is still built from there on.

With ``keep_outputs=True`` (and ``grad=False``) each call's output ``O`` (in the graph when
grad is enabled) and values ``V`` are kept as well: ``∂s/∂A = (∂s/∂O)·Vᵀ`` is then exact and
the forward keeps the fused kernel, a cheaper way to the gradients of the maps than
``grad=True`` (Chefer's method uses it).

``nn.MultiheadAttention`` needs no module hooks: while a torch function mode is active its
native fast path (``torch._native_multi_head_attention``) is skipped, and its Python path
``F.multi_head_attention_forward`` is intercepted as a whole; inside it, SDPA is routed to
the same capture. With ``need_weights=True`` (and ``grad=False``) its own weights (per
head) are recorded; otherwise the recorded map is also what it returns as weights. The
uncaptured module may take the native fast path, which rounds differently, so its outputs
under capture agree with the uncaptured ones within float rounding (~1e-7), not bit for bit.

Mode intercepts see function calls, not modules: given a `Model` whose ``anatomy`` names
its attention modules, only calls made inside those modules are recorded (a CLIP text
tower, a CoCa attentional pooler, a detector's cross-attention are left out); given a raw
``nn.Module`` or a model without anatomy, every attention call is recorded.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_SDPA = F.scaled_dot_product_attention
_MHA_FORWARD = F.multi_head_attention_forward


class AttentionRecord:
    """The attention maps recorded inside one `capture_attention` block.

    Attributes
    ----------
    maps : list of torch.Tensor
        One (B, heads, N_q, N_k) tensor of attention probabilities per self-attention call,
        in forward order (several forward passes inside the block append in turn).
    outputs, values : list of torch.Tensor
        With ``keep_outputs=True``: each SDPA call's output (B, heads, N_q, d) and values
        (B, heads, N_k, d), heads repeated to the query heads; empty otherwise.
    """

    def __init__(self) -> None:
        self.maps: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.maps)

    def clear(self) -> None:
        """Forget the maps recorded so far (e.g. between forward passes)."""
        self.maps.clear()
        self.outputs.clear()
        self.values.clear()

    def map_gradients(self, output_gradients: list[torch.Tensor]) -> list[torch.Tensor]:
        """∂s/∂A for every map from ∂s/∂O (``keep_outputs=True``): since O = A·V, (∂s/∂O)·Vᵀ."""
        return [g @ v.transpose(-2, -1) for g, v in zip(output_gradients, self.values)]


def attention_probabilities(
    q: torch.Tensor,
    k: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``softmax(q·kᵀ·scale + mask)`` with SDPA's conventions, shape (..., heads, L, S).

    A boolean mask marks the keys that take part (True), a float mask is added to the
    logits, ``is_causal`` keeps keys at or before each query. Keys with fewer heads than the
    queries (grouped-query attention) are shared by consecutive query heads.
    """
    if k.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    length, source = q.shape[-2], k.shape[-2]
    if is_causal:
        keep = torch.ones(length, source, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return logits.softmax(-1)


def _repeat_heads(v: torch.Tensor, heads: int) -> torch.Tensor:
    if v.dim() >= 3 and v.shape[-3] != heads:
        return v.repeat_interleave(heads // v.shape[-3], dim=-3)
    return v


class _AttentionMode(TorchFunctionMode):
    """Records attention probabilities from SDPA and ``F.multi_head_attention_forward``."""

    def __init__(self, record: AttentionRecord, grad: bool, active, keep_outputs: bool = False,
                 exact_outputs: bool = True) -> None:
        super().__init__()
        self.record = record
        self.grad = grad
        self.keep_outputs = keep_outputs
        self.exact_outputs = exact_outputs
        self.active = active  # () -> bool: whether calls happening now are recorded

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _SDPA and self.active():
            return self.attend(*args, **kwargs)
        if func is _MHA_FORWARD and self.active():
            return self.multi_head(func, args, kwargs)
        return func(*args, **kwargs)

    def attend(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """SDPA with the probabilities recorded (``grad=True`` or ``exact_outputs=False``: the
        output is ``A @ V``)."""
        if not self.grad and self.exact_outputs:
            out = _SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                        enable_gqa=enable_gqa)
            with torch.no_grad():
                self._keep(attention_probabilities(q, k, attn_mask, is_causal, scale, enable_gqa))
            if self.keep_outputs:
                if torch.is_grad_enabled() and not out.requires_grad:
                    out.requires_grad_(True)
                self.record.outputs.append(out)
                self.record.values.append(_repeat_heads(v.detach(), q.shape[-3]))
            return out
        attn = attention_probabilities(q, k, attn_mask, is_causal, scale, enable_gqa)
        if self.grad and torch.is_grad_enabled() and not attn.requires_grad:
            attn.requires_grad_(True)
        self._keep(attn)
        if dropout_p > 0:
            attn = F.dropout(attn, dropout_p)
        return attn.to(v.dtype) @ _repeat_heads(v, attn.shape[-3])

    def multi_head(self, func, args, kwargs):
        """``F.multi_head_attention_forward`` with SDPA routed to `attend`; when the caller asks
        for weights and neither ``grad`` nor ``keep_outputs`` is set, its own computation
        runs instead and its per-head weights are recorded."""
        names = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
                 "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
                 "key_padding_mask", "need_weights")
        call = dict(zip(names, args), **kwargs)
        call.setdefault("need_weights", True)
        if call["need_weights"] and not (self.grad or self.keep_outputs):
            average = call.get("average_attn_weights", True)
            call["average_attn_weights"] = False
            out, weights = func(**call)
            self._keep(weights if weights.dim() == 4 else weights[None])
            return out, weights.mean(-3) if average else weights
        asked, average = call["need_weights"], call.get("average_attn_weights", True)
        call["need_weights"] = False
        global_names = func.__globals__
        global_names["scaled_dot_product_attention"] = self.attend
        try:
            out, _ = func(**call)
        finally:
            global_names["scaled_dot_product_attention"] = _SDPA
        if not asked:
            return out, None
        weights = self.record.maps[-1] if call["query"].dim() == 3 else self.record.maps[-1][0]
        return out, weights.mean(-3) if average else weights

    def _keep(self, attn: torch.Tensor) -> None:
        self.record.maps.append(attn if attn.dim() == 4 else attn.reshape(-1, *attn.shape[-3:]))


def _attention_modules(model) -> list[nn.Module]:
    anatomy = getattr(model, "anatomy", None)
    if anatomy is None or not anatomy.attentions:
        return []
    return [model.layer(name) for name in anatomy.attentions]


@contextlib.contextmanager
def capture_attention(model, grad: bool = False, keep_outputs: bool = False,
                      layers: list[int] | None = None, exact_outputs: bool = True) -> Iterator[AttentionRecord]:
    """Record every self-attention map computed inside the block.

    Parameters
    ----------
    model : Model or nn.Module
        A `Model` whose ``anatomy.attentions`` names its attention modules (only calls inside
        them are recorded), or any module / model (every SDPA call is recorded).
    grad : bool
        False: maps are computed on the side, outputs are bit-identical. True: the maps are
        in the autograd graph (run the forward with grad enabled).

    Yields
    ------
    AttentionRecord
        Filled by forward passes inside the block. Nothing stays patched or hooked after
        the block, even when it raises.
    keep_outputs : bool
        Also keep each call's output and values (``record.outputs``, ``record.values``;
        only with ``grad=False``) for `AttentionRecord.map_gradients`.
    layers : list of int, optional
        Record only these entries of ``model.anatomy.attentions`` (negative counts from the
        end); the other layers run untouched, so a method that reads one layer pays for
        one explicit attention map, not all of them.
    exact_outputs : bool
        With ``grad=False``: True runs the model's own fused attention for the outputs (bit
        for bit) and computes the maps beside it; False computes each map once and the
        output as ``A @ V`` (equal within float rounding, one attention computation instead
        of two: rollout uses it).
    """
    if grad and keep_outputs:
        raise ValueError("keep_outputs is for grad=False: with grad=True the maps themselves are in the graph")
    if keep_outputs and not exact_outputs:
        raise ValueError("keep_outputs keeps the fused outputs: it needs exact_outputs=True")
    record = AttentionRecord()
    modules = _attention_modules(model)
    if layers is not None:
        if not modules:
            raise ValueError("layers= needs a model whose anatomy names its attention modules")
        bad = [i for i in layers if not -len(modules) <= i < len(modules)]
        if bad:
            raise IndexError(f"attention layers {bad} out of range for {len(modules)} attention modules")
        modules = [modules[i] for i in layers]
    depth = [0]

    def enter(_module, _args):
        depth[0] += 1

    def leave(_module, _args, _output):
        depth[0] -= 1

    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        with _AttentionMode(record, grad, (lambda: depth[0] > 0) if modules else (lambda: True), keep_outputs,
                            exact_outputs):
            yield record
    finally:
        for handle in handles:
            handle.remove()
