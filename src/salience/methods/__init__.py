"""All explanation methods, registered by name. Importing this module registers them."""

from .base import REGISTRY, Explainer, available_methods, get_explainer, register
from . import cam, chefer_detr, eive, gradient, guided, perturbation, reference  # noqa: F401

__all__ = ["REGISTRY", "Explainer", "available_methods", "get_explainer", "register"]
