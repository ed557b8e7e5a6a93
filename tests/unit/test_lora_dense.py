"""Merged-matmul LoRA forward: same function and gradients as peft's, chosen by cost, undone on exit."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from selfsynth.errors import ConfigError
from selfsynth.models.lora_dense import dense_is_cheaper, lora_forward

torch.set_num_threads(1)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Linear(24, 40)
        self.narrow = nn.Linear(40, 8, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.narrow(torch.tanh(self.wide(x)))


def _model(r: int, dropout: float = 0.0):
    torch.manual_seed(0)
    model = get_peft_model(
        _Net(), LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout, target_modules=["wide", "narrow"])
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; a trained adapter is not
            nn.init.normal_(p, std=0.3)
    return model


def _loss_and_grads(model, x):
    model.zero_grad()
    loss = model(x).pow(2).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_dense_forward_gives_the_same_loss_and_gradients():
    model = _model(r=6)
    x = torch.randn(5, 7, 24)
    ref_loss, ref_grads = _loss_and_grads(model, x)
    with lora_forward(model, "dense") as n:
        assert n == 2
        loss, grads = _loss_and_grads(model, x)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert ref_grads.keys() == grads.keys() and len(grads) == 4  # A and B of both layers
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # under CPU bf16 autocast the two agree to bf16 rounding
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(x).float()
        with lora_forward(model, "dense"):
            out = model(x).float()
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_auto_merges_only_where_it_saves_work_and_restores_peft_on_exit():
    assert dense_is_cheaper(128, 192, 192) and dense_is_cheaper(128, 192, 512)
    assert not dense_is_cheaper(128, 4096, 4096) and not dense_is_cheaper(128, 4096, 11008)
    # wide: 24x40 -> dense from r 4 (3*r*64 > 960); narrow: 40x8 -> from r 2
    model = _model(r=3)
    with lora_forward(model, "auto") as n:
        assert n == 1  # narrow only
    with lora_forward(model, "factored") as n:
        assert n == 0
    layer = model.base_model.model.narrow
    assert "forward" not in vars(layer)  # the instance override is gone
    with pytest.raises(ConfigError, match="lora_forward"), lora_forward(model, "fast"):
        pass


def test_layers_with_dropout_keep_peft_forward():
    model = _model(r=6, dropout=0.1)
    with lora_forward(model, "dense") as n:
        assert n == 0
