"""The project's own architectures and their shipped weights.

EfficientNet-Lite0/1/2 (the bundled ImageNet classifiers; `lite_features` is the frozen
backbone the others sit on), the scene detectors (`scene_detr`, `scene_deformable_detr`,
built and loaded by `scene_detectors`, with `detr_parts`) and `scene_vit`. Their trained
heads ship in ``weights/`` (`lite_features.WEIGHTS_DIR`). A new trained model goes here: its
module builds and loads it and registers its architecture for ``checkpoint:PATH``
(`salience.models.checkpoint.register_architecture`); importing this package registers them all.
"""

from . import scene_detectors, scene_vit  # noqa: F401 - they register their checkpoint architectures
