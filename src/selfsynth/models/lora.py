"""Turn the fine-tuning settings into a peft LoRA config: which linears get adapters, which parts train.

LoRA goes on the language model's linear layers only ("all-linear" means every ``nn.Linear``
inside the language model: never the vision tower, never the projector, never the LM head). The
projector is trained in full (peft ``modules_to_save``) when ``train_projector`` is on, and is
saved with the adapter. Names are found by walking the model, so any LLaVA-, Qwen2-VL- or
Idefics-style layout works.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import warnings
from collections.abc import Iterator
from typing import Any

from torch import nn

from selfsynth.errors import ConfigError

_LM_NAMES = ("language_model", "text_model")
_PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger", "mm_projector")


def _find(model: nn.Module, names: tuple[str, ...]) -> str | None:
    for name, _ in model.named_modules():
        if name.rsplit(".", 1)[-1] in names:
            return name
    return None


def language_model_prefix(model: nn.Module) -> str:
    name = _find(model, _LM_NAMES)
    if name is None:
        raise ConfigError(
            f"cannot find the language model inside {type(model).__name__} (looked for "
            f"{', '.join(_LM_NAMES)}); this architecture is not supported for LoRA yet"
        )
    return name


def projector_name(model: nn.Module) -> str | None:
    """The projector module's full name (the part between the vision tower and the language model)."""
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _PROJECTOR_NAMES and not any(lm in name for lm in _LM_NAMES):
            return name
    return None


def target_regex(model: nn.Module, target_modules: str) -> str:
    """A full-match regex over module names selecting the language model's chosen linear layers."""
    prefix = language_model_prefix(model)
    leaves = sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if n.startswith(prefix + ".") and isinstance(m, nn.Linear)
        }
    )
    if not leaves:
        raise ConfigError(f"no nn.Linear layers under {prefix}; cannot place LoRA adapters")
    if target_modules.strip() != "all-linear":
        wanted = [t.strip() for t in target_modules.split(",") if t.strip()]
        for t in wanted:
            if t not in leaves:
                close = difflib.get_close_matches(t, leaves, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f"; choose from {', '.join(leaves)}"
                raise ConfigError(
                    f"finetune.target_modules: no linear layer named '{t}' in the language model{hint}"
                )
        leaves = sorted(set(wanted))
    return rf"^{re.escape(prefix)}\..*\.(?:{'|'.join(map(re.escape, leaves))})$"


def lora_config(model: nn.Module, cfg: Any) -> Any:
    """The peft ``LoraConfig`` for ``cfg`` (a FinetuneConfig) on ``model``."""
    from peft import LoraConfig

    save = None
    if cfg.train_projector:
        proj = projector_name(model)
        if proj is None:
            raise ConfigError(
                f"finetune.train_projector is on but {type(model).__name__} has no recognised "
                f"projector ({', '.join(_PROJECTOR_NAMES)}); set finetune.train_projector=false"
            )
        save = [proj]
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_regex(model, cfg.target_modules),
        modules_to_save=save,
        bias="none",
    )


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence the deprecation warning peft triggers in transformers 5 (``is_gradient_checkpointing``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
