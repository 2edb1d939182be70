"""Adapters: models of the hub libraries as `Model`s, through the libraries' own code.

One module per family: `timm` (``timm:NAME``), `hf` (``hf:NAME``, routed by the config to a
family that `hf_common.register_hf_family` knows: `clip`, `hf_detectors`; else an image
classifier) and `clip` (also ``open_clip:ARCH/PRETRAINED``). `anatomy_discovery` finds a
transformer's token anatomy from the module. A new hub family goes here; importing this
package registers the Hugging Face families.
"""

from . import clip, hf, hf_detectors, timm  # noqa: F401 - clip and hf_detectors register their hf: families
