"""LoRA SFT, label masking, merging and resuming on tiny LLaVA / Qwen2-VL / Idefics3 models."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_images, tiny_finetune_config, tiny_model

from selfsynth.config import FinetuneConfig
from selfsynth.errors import ConfigError
from selfsynth.models.augment import augment
from selfsynth.models.chat import IGNORE, open_image
from selfsynth.models.features import find_tower
from selfsynth.models.lora import language_model_prefix, projector_name, target_regex
from selfsynth.models.sft import answer_logprobs, batch_for, token_loss
from selfsynth.models.vlm import VLM
from selfsynth.records import QA

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
KINDS = ["llava", "qwen2vl", "idefics3"]
ANSWERS = ["a red finch", "a blue robin with white wing bars", "a brown sparrow"]


def cfg(**kw) -> FinetuneConfig:
    return tiny_finetune_config(**kw)  # fp32: exact comparisons below; bf16 autocast has its own test


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("vlms")


@pytest.fixture(scope="module")
def examples(root):
    images = make_images(root / "images", 3)
    return [
        QA(str(i), str(images[i % 3]), "what is the name of this bird ?", ANSWERS[i % 3], "x")
        for i in range(6)
    ]


def _loss(vlm, exs):
    return vlm.loss([e.image for e in exs], [e.question for e in exs], [e.answer for e in exs])


@pytest.mark.parametrize("kind", KINDS)
def test_only_answer_and_eos_are_supervised(root, examples, kind):
    vlm = VLM.load(tiny_model(kind, root))
    tok = vlm.processor.tokenizer
    b = batch_for(
        vlm, [open_image(e.image) for e in examples[:3]], [e.question for e in examples[:3]], ANSWERS
    )
    for i, ans in enumerate(ANSWERS):
        ids, labels, mask = b["input_ids"][i], b["labels"][i], b["attention_mask"][i]
        kept = labels[labels != IGNORE]
        assert tok.decode(kept).strip() == ans + tok.eos_token  # the answer, then EOS, nothing else
        assert kept[-1].item() == tok.eos_token_id
        first = int((labels != IGNORE).nonzero()[0])
        assert (labels[:first] == IGNORE).all() and (labels[mask == 0] == IGNORE).all()
        assert (ids[labels != IGNORE] == kept).all()
    image_id = vlm.model.config.image_token_id
    assert (b["labels"][b["input_ids"] == image_id] == IGNORE).all()


def test_max_length_truncates_the_answer_not_the_prompt(root, examples):
    vlm = VLM.load(tiny_model("llava", root))
    full = batch_for(vlm, [open_image(examples[1].image)], [examples[1].question], [ANSWERS[1]])
    n_prompt = int((full["labels"][0] == IGNORE).sum())
    short = batch_for(
        vlm, [open_image(examples[1].image)], [examples[1].question], [ANSWERS[1]], max_length=n_prompt + 2
    )
    assert short["input_ids"].shape[1] == n_prompt + 2 and int((short["labels"] != IGNORE).sum()) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_lora_step_lowers_loss_tower_frozen_projector_trained(tmp_path, root, examples, kind):
    vlm = VLM.load(tiny_model(kind, root))
    tower_name, tower = find_tower(vlm.model)
    proj = projector_name(vlm.model)
    frozen = {n: p.detach().clone() for n, p in tower.named_parameters() if not n.startswith("merger.")}
    proj_before = {n: p.detach().clone() for n, p in vlm.model.get_submodule(proj).named_parameters()}
    before = _loss(vlm, examples)
    info = vlm.train_lora(examples, cfg(), tmp_path, progress=False)
    assert (
        info["steps"] == 1 and info["examples"] == 6 and info["loss_first"] == pytest.approx(before, rel=1e-5)
    )
    assert _loss(vlm, examples) < before
    for n, p in find_tower(vlm.model)[1].named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    trained = dict(
        vlm.model.get_base_model().get_submodule(proj).modules_to_save["default"].named_parameters()
    )
    assert any(not torch.equal(trained[n], p) for n, p in proj_before.items())
    lm = language_model_prefix(vlm.model.get_base_model())
    lora = [n for n, _ in vlm.model.get_base_model().named_modules() if n.endswith("lora_A")]
    assert lora and all(n.startswith(lm + ".") for n in lora)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    rows = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]


def test_bf16_autocast_step_on_cpu_lowers_loss_and_keeps_fp32_weights(tmp_path, root, examples):
    vlm = VLM.load(tiny_model("llava", root))
    before = _loss(vlm, examples)
    info = vlm.train_lora(examples, cfg(cpu_precision="bf16"), tmp_path, progress=False)
    assert info["loss_first"] == pytest.approx(before, rel=0.05)  # bf16 matmuls, fp32 loss
    assert _loss(vlm, examples) < before
    assert all(p.dtype == torch.float32 for p in vlm.model.parameters())


def test_cpu_precision_fixed_values_and_unknown_values():
    from selfsynth.models.devices import cpu_bf16

    assert cpu_bf16("fp32") is False and cpu_bf16("bf16") is True
    with pytest.raises(ConfigError, match="cpu_precision"):
        cpu_bf16("half")


def test_attention_auto_is_eager_on_cpu_and_default_on_gpu(root):
    from selfsynth.models.devices import attention_for

    assert attention_for("auto", torch.device("cpu")) == "eager"
    assert attention_for("auto", torch.device("cuda")) is None
    assert attention_for("sdpa", torch.device("cpu")) == "sdpa"
    with pytest.raises(ConfigError, match="model.attention"):
        attention_for("fast", torch.device("cpu"))
    for kind in KINDS:  # every backend loads with the CPU choice
        vlm = VLM.load(tiny_model(kind, root))
        assert vlm.model.config.text_config._attn_implementation == "eager"


@pytest.mark.parametrize("kind", ["llava", "qwen2vl"])
def test_merge_reloads_with_identical_logits(tmp_path, root, examples, kind):
    from transformers import AutoModelForImageTextToText

    vlm = VLM.load(tiny_model(kind, root))
    vlm.train_lora(examples, cfg(epochs=2.0), tmp_path / "ft", progress=False)
    batch = batch_for(
        vlm, [open_image(e.image) for e in examples[:3]], [e.question for e in examples[:3]], ANSWERS
    )
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        ref = vlm.model(**inputs).logits
    merged = vlm.merge(tmp_path / "ft" / "adapter", tmp_path / "merged")
    plain = AutoModelForImageTextToText.from_pretrained(merged).eval()
    with torch.no_grad():
        got = plain(**inputs).logits
    assert torch.allclose(ref, got, atol=1e-5)
    again = VLM.load(merged)  # the merged folder is a complete model directory (processor + template)
    assert again.generate([examples[0].image], [examples[0].question], max_new_tokens=4) == vlm.generate(
        [examples[0].image], [examples[0].question], max_new_tokens=4
    )


@pytest.mark.parametrize("kind", KINDS)
def test_merged_lora_forward_trains_like_peft(tmp_path, root, examples, kind, caplog):
    c = cfg(epochs=3.0, batch_size=3, micro_batch_size=3, lr=5e-3)
    path = tiny_model(kind, root)
    logs = {}
    for mode in ("factored", "dense"):
        with caplog.at_level("INFO", logger="selfsynth.models.sft"):
            VLM.load(path).train_lora(
                examples, replace(c, lora_forward=mode), tmp_path / mode, progress=False
            )
        lines = (tmp_path / mode / "train_log.jsonl").read_text().splitlines()
        logs[mode] = [json.loads(x)["loss"] for x in lines]
    assert "train as one merged matmul" in caplog.text
    assert len(logs["dense"]) == 6 and logs["dense"][-1] < logs["dense"][0]
    assert np.allclose(logs["dense"], logs["factored"], rtol=1e-4)


def test_resume_matches_an_uninterrupted_run(tmp_path, root, examples):
    c = cfg(epochs=4.0, batch_size=3, micro_batch_size=3, lora_dropout=0.1, augment=True, lr=5e-3)
    path = tiny_model("llava", root)
    full = VLM.load(path).train_lora(examples, c, tmp_path / "a", progress=False, checkpoint_every=3)
    cut = VLM.load(path)
    part = cut.train_lora(examples, c, tmp_path / "b", progress=False, checkpoint_every=3, max_steps=5)
    assert part["steps"] == 5 and (tmp_path / "b" / "checkpoint" / "state.json").is_file()
    rest = VLM.load(path).train_lora(
        examples, c, tmp_path / "b", progress=False, checkpoint_every=3, resume=True
    )
    assert rest["steps"] == full["steps"] == 8
    log_a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x)["loss"] for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert np.allclose(log_a, log_b, rtol=1e-5)
    assert not (tmp_path / "b" / "checkpoint").exists()
    done = VLM.load(path).train_lora(examples, c, tmp_path / "b", progress=False, resume=True)
    assert done == rest  # a finished run is not trained again


def test_checkpoint_of_another_batch_order_is_not_resumed(tmp_path, root, examples, caplog):
    path = tiny_model("llava", root)
    c = cfg(epochs=4.0, batch_size=3, micro_batch_size=3, group_by_length=True)
    VLM.load(path).train_lora(examples, c, tmp_path, progress=False, checkpoint_every=3, max_steps=5)
    c2 = cfg(epochs=4.0, batch_size=3, micro_batch_size=3, group_by_length=False)
    with caplog.at_level("WARNING"):
        out = VLM.load(path).train_lora(examples, c2, tmp_path, progress=False, resume=True)
    assert "starting over" in caplog.text
    assert out["steps"] == 8  # all eight steps were trained again, in the ungrouped order


@pytest.mark.parametrize("kind", KINDS)
def test_token_loss_matches_transformers_loss(root, examples, kind):
    # token_loss projects only from the first supervised position on: the same loss, less work
    vlm = VLM.load(tiny_model(kind, root))
    batch = batch_for(
        vlm, [open_image(e.image) for e in examples[:3]], [e.question for e in examples[:3]], ANSWERS
    )
    with torch.no_grad():
        total, count = token_loss(vlm.model, batch, vlm.device)
        ref = vlm.model(**batch).loss
    assert float(total / count) == pytest.approx(float(ref), rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_answer_logprobs_add_up_to_the_loss_and_leave_out_eos(root, examples, kind):
    vlm = VLM.load(tiny_model(kind, root))
    exs = examples[:3]
    images = [Image.open(e.image).convert("RGB") for e in exs]
    batch = batch_for(vlm, images, [e.question for e in exs], [e.answer for e in exs])
    with torch.no_grad():
        total, _ = token_loss(vlm.model, batch, vlm.device)
        with_eos = answer_logprobs(vlm.model, batch, vlm.device, eos=True)
        without = answer_logprobs(vlm.model, batch, vlm.device)
    assert float(with_eos.sum()) == pytest.approx(-float(total), rel=1e-4)
    assert bool((without > with_eos).all())  # the EOS term (a log-probability < 0) is gone
    scored = vlm.answer_logprobs([e.image for e in exs], [e.question for e in exs], [e.answer for e in exs])
    assert scored == pytest.approx(without.tolist(), rel=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_to_a_multiple_keeps_the_loss(root, examples, kind):
    # bf16 training rounds batch lengths up (devices.PAD_MULTIPLE_BF16): the padding is masked
    vlm = VLM.load(tiny_model(kind, root))
    args = (vlm, [open_image(e.image) for e in examples[:3]], [e.question for e in examples[:3]], ANSWERS)
    plain, padded = batch_for(*args), batch_for(*args, pad_multiple=16)
    assert (
        padded["input_ids"].shape[1] % 16 == 0 and padded["input_ids"].shape[1] > plain["input_ids"].shape[1]
    )
    with torch.no_grad():
        a, n_a = token_loss(vlm.model, plain, vlm.device)
        b, n_b = token_loss(vlm.model, padded, vlm.device)
    assert n_a == n_b and float(a) == pytest.approx(float(b), rel=1e-5)


def test_target_modules_are_checked(root):
    vlm = VLM.load(tiny_model("llava", root))
    assert "q_proj" in target_regex(vlm.model, "all-linear") and "fc1" not in target_regex(
        vlm.model, "all-linear"
    )
    with pytest.raises(ConfigError, match="did you mean 'q_proj'"):
        target_regex(vlm.model, "q_prj")


def test_augment_is_seeded_and_mild():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    a = augment(im, np.random.default_rng([1, 2]))
    assert a.size == im.size
    assert np.array_equal(np.asarray(a), np.asarray(augment(im, np.random.default_rng([1, 2]))))
    assert not np.array_equal(np.asarray(a), np.asarray(augment(im, np.random.default_rng([1, 3]))))


def test_gradient_checkpointing_gives_the_same_steps(tmp_path, root, examples):
    """The GPU default (activation recomputation) must not change what is learned."""
    path = tiny_model("llava", root)
    c = cfg(epochs=2.0)
    plain = VLM.load(path).train_lora(
        examples, c, tmp_path / "a", progress=False, gradient_checkpointing=False
    )
    vlm = VLM.load(path)
    ckpt = vlm.train_lora(examples, c, tmp_path / "b", progress=False, gradient_checkpointing=True)
    assert ckpt["loss_last"] == pytest.approx(plain["loss_last"], rel=1e-5)
    assert not vlm.model.get_base_model().is_activation_checkpointing  # generation runs without it


def test_length_grouped_stream_keeps_examples_and_cuts_padding():
    from selfsynth.models.sft import GROUP_WINDOW, _stream

    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 200, size=500)
    plain = _stream(500, 60, 32, seed=3)
    grouped = _stream(500, 60, 32, seed=3, lengths=lengths)
    assert len(grouped) == len(plain) == 60 * 32
    window = 32 * GROUP_WINDOW
    for lo in range(0, len(plain), window):  # the same examples in the same part of training
        assert sorted(plain[lo : lo + window]) == sorted(grouped[lo : lo + window])

    def padded(order):
        return sum(lengths[order[b : b + 32]].max() * 32 for b in range(0, len(order), 32))

    assert padded(grouped) < 0.8 * padded(plain)
    assert np.array_equal(grouped, _stream(500, 60, 32, seed=3, lengths=lengths))  # resumable
    assert not np.array_equal(grouped, _stream(500, 60, 32, seed=4, lengths=lengths))
