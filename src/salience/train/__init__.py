"""Training recipes for the project's own models: the scene detectors and the scene ViT.

`features` caches the frozen backbone's feature maps of a generated scene set once, so
training touches only the small transformer heads; `loop` is the resumable training loop
(checkpoints, progress bar, log); `detection` holds DETR's set criterion and Hungarian
matching; `recipes` are the `salience train ...` recipes that write the shipped weights;
`coco_eval` scores detectors with pycocotools.
"""
