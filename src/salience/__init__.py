"""salience: what vision models look at.

>>> import salience as sl
>>> model = sl.load_model("efficientnet_lite0")
>>> expl = sl.explain(model, sl.load_images("cat.jpg"), method="gradcam")
>>> expl.save("out/")
"""

from .errors import SalienceError
from .explain import explain
from .explanation import Explanation
from .images import ImageBatch, load_images
from .metrics import evaluate
from .methods import available_methods, get_explainer
from .models import available_models, load_model, wrap
from .models.model import Model
from .preprocessing import Geometry, Preprocess
from .targets import ClassTarget, Target

__version__ = "0.1.0"

__all__ = [
    "ClassTarget",
    "Explanation",
    "Geometry",
    "ImageBatch",
    "Model",
    "Preprocess",
    "SalienceError",
    "Target",
    "available_methods",
    "available_models",
    "evaluate",
    "explain",
    "get_explainer",
    "load_images",
    "load_model",
    "wrap",
]
