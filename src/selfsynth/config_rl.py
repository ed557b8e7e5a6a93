"""Settings of the optional RL round (``rl:``; ``stages/rl.py``), part of ``config.RunConfig``.

Kept in a module of their own so ``config.py`` stays readable; ``selfsynth.config`` re-exports
``RLConfig``. Disabled by default: no stage, fingerprint or output of a run changes then.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfsynth.errors import ConfigError

RL_METHODS = ("ours", "nofilter")  # the methods that select Z*, which the reward needs


@dataclass
class RLConfig:
    """GRPO on the last round's merged model: G answers per image, reward = label + grounded citations."""

    enabled: bool = False
    max_images: int = 0  # training images used (evenly spaced by id); 0 = every image with a Z*
    group: int = 4  # G: answers sampled per image from one shared prefill
    steps: int = 50  # optimizer steps, each on batch_size images x group answers
    batch_size: int = 8
    micro_batch_size: int = 8  # answers per forward/backward pass
    lr: float = 1e-5
    kl: float = 0.04  # beta of the k3 KL penalty to the round's merged model; 0 skips the reference pass
    cite_bonus: float = 0.25  # per cited concept of the image's Z*, up to cite_cap of them
    cite_cap: int = 4  # 0 = no cap
    outside_penalty: float = 0.25  # per cited bank concept outside Z*
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    no_repeat_ngram: int = 0  # as synthesize.no_repeat_ngram
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # > 0 makes the loss's policy differ from the one that sampled
    target_modules: str = "all-linear"
    train_projector: bool = False
    max_grad_norm: float = 1.0
    max_length: int = 512
    checkpoint_every: int = 25  # steps between checkpoints (0: none; a killed stage then starts over)


def check_rl(cfg: RLConfig, method: str) -> None:
    """Refuse settings the RL round cannot run with (checked only when it is enabled)."""
    if not cfg.enabled:
        return
    if method not in RL_METHODS:
        raise ConfigError(
            f"rl.enabled needs a method that selects Z* ({', '.join(RL_METHODS)}), not {method}"
        )
    if cfg.group < 2:
        raise ConfigError(
            f"rl.group must be >= 2 (one answer has no group to be compared with), got {cfg.group}"
        )
    for key in ("steps", "batch_size", "micro_batch_size", "max_new_tokens", "lora_r"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"rl.{key} must be >= 1, got {getattr(cfg, key)}")
    if cfg.temperature <= 0:
        raise ConfigError(
            "rl.temperature must be > 0: greedy answers of a group are identical and teach nothing"
        )
    if min(cfg.kl, cfg.cite_bonus, cfg.outside_penalty, cfg.lr) < 0:
        raise ConfigError("rl.kl, rl.cite_bonus, rl.outside_penalty and rl.lr must be >= 0")
