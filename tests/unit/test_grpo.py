"""GRPO on tiny in-process VLMs: it learns a fixed reward, descends its own loss, resumes exactly."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import make_images, tiny_model

from selfsynth.config_rl import RLConfig
from selfsynth.models.chat import encode, open_image
from selfsynth.models.sft import batch_for, token_logprobs
from selfsynth.models.vlm import VLM
from selfsynth.records import Example
from selfsynth.stages.grpo import train_grpo
from selfsynth.stages.rl_reward import Reward, group_advantages

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
QUESTION = "what is the name of this bird ?"


def letters(text: str) -> float:
    """The fixed reward: 1 for an answer of ASCII letters only."""
    return float(text.isascii() and text.isalpha())


def score(e: Example, answer: str) -> Reward:
    return Reward(letters(answer), False, (), ())


def cfg(**kw) -> RLConfig:
    base = dict(enabled=True, group=4, steps=2, batch_size=2, micro_batch_size=8, lr=1e-2, kl=0.04)
    return RLConfig(
        **{**base, "lora_r": 4, "lora_alpha": 8, "max_new_tokens": 4, "checkpoint_every": 0, **kw}
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("rl-vlms")


@pytest.fixture(scope="module")
def examples(root):
    return [Example(str(i), str(p), "x", "train") for i, p in enumerate(make_images(root / "images", 4))]


def first_token_reward(vlm: VLM, examples: list[Example]) -> float:
    """The exact expected reward of a one-token answer: sum over the vocabulary of p(token) x reward."""
    tok = vlm.processor.tokenizer
    enc = encode(vlm.processor, [open_image(e.image) for e in examples], [vlm.prompt(QUESTION)] * 4)
    with torch.no_grad():
        p = vlm.model(**enc).logits[:, -1].float().softmax(-1)
    r = torch.tensor([letters(tok.decode([i], skip_special_tokens=True).strip()) for i in range(p.shape[1])])
    return float((p * r).sum(-1).mean())


def test_a_few_steps_raise_the_expected_reward(root, examples, tmp_path):
    # Qwen2-VL's template starts the answer right after the prompt; LLaVA's puts a space there, which
    # a tuned model generates but a random one does not, so a random LLaVA's answers would re-encode
    # to other tokens than it sampled.
    vlm = VLM.load(tiny_model("qwen2vl", root))
    # A random tiny model's next-token distribution is nearly uniform (logits ~ 0), so no few steps
    # move it; a scaled output layer gives it the peaked distribution of a trained model.
    with torch.no_grad():
        vlm.model.lm_head.weight.mul_(30.0)
    before = first_token_reward(vlm, examples)
    run = cfg(group=8, batch_size=4, micro_batch_size=32, steps=8, max_new_tokens=1)
    info = train_grpo(vlm, examples, score, run, tmp_path, question=QUESTION, seed=0, progress=False)
    after = first_token_reward(vlm, examples)
    assert after > before + 0.2, (before, after)
    rows = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and info["steps"] == 8
    assert rows[0]["kl"] == 0.0  # the adapter starts at zero: the policy is the reference
    assert rows[-1]["kl"] > 0.0


@pytest.mark.parametrize("kind", ["llava", "qwen2vl"])
def test_one_step_lowers_the_policy_loss_on_its_own_answers(root, examples, tmp_path, kind):
    vlm = VLM.load(tiny_model(kind, root))
    seen: list[tuple[Example, str]] = []

    def recording(e: Example, answer: str) -> Reward:  # the answers of random weights vary in length
        seen.append((e, answer))
        return Reward(float(len(answer)), False, (), ())

    run = cfg(steps=1, lr=1e-3, kl=0.0, train_projector=True)
    train_grpo(vlm, examples, recording, run, tmp_path, question=QUESTION, seed=0, progress=False)
    adv = torch.tensor(group_advantages([float(len(a)) for _, a in seen], run.group))
    assert adv.abs().sum() > 0, "no group had different rewards: nothing was learnt"
    batch = batch_for(
        vlm, [open_image(e.image) for e, _ in seen], [QUESTION] * len(seen), [a for _, a in seen]
    )

    def surrogate() -> float:
        with torch.no_grad():
            logp, mask = token_logprobs(vlm.model, batch, vlm.device)
        return float(-(adv * (logp * mask).sum(1) / mask.sum(1)).mean())

    after = surrogate()
    with vlm.model.disable_adapter():
        before = surrogate()
    assert after < before


def _log(out) -> list[dict]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_a_killed_training_continues_to_the_same_adapter(root, examples, tmp_path):
    path = tiny_model("llava", root)
    run = cfg(steps=3, checkpoint_every=1, train_projector=True)
    whole = train_grpo(
        VLM.load(path), examples, score, run, tmp_path / "a", question=QUESTION, progress=False
    )
    part = train_grpo(
        VLM.load(path), examples, score, run, tmp_path / "b", question=QUESTION, progress=False, max_steps=2
    )
    assert part["steps"] == 2 and (tmp_path / "b" / "checkpoint").exists()
    assert not (tmp_path / "b" / "adapter").exists()
    rest = train_grpo(VLM.load(path), examples, score, run, tmp_path / "b", question=QUESTION, progress=False)
    assert rest["steps"] == whole["steps"] == 3
    assert _log(tmp_path / "a") == _log(tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "b").glob("checkpoint*"))  # a finished run keeps no checkpoint
    vlm = VLM.load(path)
    again = train_grpo(vlm, examples, score, run, tmp_path / "b", question=QUESTION, progress=False)
    assert again == rest and hasattr(vlm.model, "disable_adapter")  # finished: loaded, not retrained
