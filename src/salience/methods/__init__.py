"""All explanation methods, registered by name. Importing this module registers them."""

from .base import REGISTRY, Explainer, available_methods, get_explainer, register
from . import (attention_maps, cam, chefer_detr, drise, eive, extremal, fullgrad, gradient, guided, odam,  # noqa: F401
               perturbation, reference, surrogate)

__all__ = ["REGISTRY", "Explainer", "available_methods", "get_explainer", "register"]
