"""All explanation methods, registered by name. Importing this module registers them."""

from .base import REGISTRY, Explainer, available_methods, get_explainer, register
from . import gradient, guided  # noqa: F401  (registers the gradient methods)

__all__ = ["REGISTRY", "Explainer", "available_methods", "get_explainer", "register"]
