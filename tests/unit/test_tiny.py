"""The embedded base VLM: tokenizer builder, pretraining data, the pretraining loop, resume and the build cache."""

from __future__ import annotations

import dataclasses
import os
import random
import re

import pytest

torch = pytest.importorskip("torch")

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import selfsynth  # noqa: E402,F401
from selfsynth.basevlm import build as tiny  # noqa: E402
from selfsynth.basevlm import corpus as base_data  # noqa: E402
from selfsynth.basevlm import pretrain  # noqa: E402
from selfsynth.basevlm.tokenizer import CHAT_TEMPLATE, IMAGE_TOKEN, render_prompt, train_tokenizer  # noqa: E402
from selfsynth.errors import ConfigError  # noqa: E402

TINY = dict(
    species=2,
    train_per_class=3,
    hidden_size=32,
    intermediate_size=64,
    layers=1,
    heads=2,  # noqa: C408
    vocab_size=400,
    concept_seeds=1,
    steps=10,
    batch_size=8,
    lr=3e-3,
    warmup_steps=2,
    checkpoint_every=5,
)


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from selfsynth.data.world import make_world

    out = tmp_path_factory.mktemp("world")
    make_world(out, species=2, train_per_class=3, test_per_class=1, species_seed=7, image_seed=8)
    return out


def test_tokenizer_builder_special_tokens_template_and_unseen_names(tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer(["The bird has a red crown.", "The answer is B. blue"] * 30, vocab_size=300)
    for t in ("<|pad|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this bird."}]}]
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == render_prompt(
        "Describe this bird."
    )
    name = "Zyxwort Quillaby-Ñu"  # never in the training text: byte-level BPE still spells it
    assert tok.decode(tok(name, add_special_tokens=False)["input_ids"]) == name
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.chat_template == CHAT_TEMPLATE
    assert again("a red crown")["input_ids"] == tok("a red crown")["input_ids"]


def test_pretraining_triples_never_name_a_species(world):
    records = base_data.load_records(world)
    triples = base_data.make_triples(world, records, seed=0)
    labels = base_data.world_species_labels(world)
    assert len(records) == 8 and {t.image for t in triples} == set(range(8))
    assert not [t for t in triples for lab in labels if lab.lower() in (t.question + t.answer).lower()]
    assert any(
        "Answer with the option's letter." in t.question
        and re.fullmatch(r"[A-Z][a-z ]+: [a-z][a-z -]*\.", t.answer)
        for t in triples
    )
    assert any("following visual features" in t.question for t in triples)  # in-context label use


def test_part_targets_hold_visible_values_and_mask_hidden_parts(world):
    from selfsynth.data.world.phrases import PARTS

    records = base_data.load_records(world)
    t = base_data.part_targets_for(records)
    assert t.labels.shape == (len(records), len(PARTS)) and t.classes == [len(v) for v in PARTS.values()]
    for r, row in zip(records, t.labels.tolist(), strict=True):
        for k, (part, values) in enumerate(PARTS.items()):
            assert row[k] == (values.index(r.attributes[part]) if part in r.visible_parts else -100)
    # each value is named (for the word readout) in the order of its label index
    assert [len(w) for w in t.words] == t.classes
    assert (
        t.words[list(PARTS).index("beak_shape")][PARTS["beak_shape"].index("conical")] == "short and conical"
    )
    assert t.words[0] == PARTS["crown_colour"]  # colours are named by themselves


def test_scene_targets_follow_the_parts_with_their_option_words(world):
    from selfsynth.data.world.phrases import PARTS

    records = base_data.load_records(world)
    plain = base_data.part_targets_for(records)
    t = base_data.part_targets_for(records, scene=True)
    n = len(PARTS)
    assert torch.equal(t.labels[:, :n], plain.labels) and t.words[:n] == plain.words
    assert t.classes[n:] == [2, 2, 4]  # pose, facing, background; never a distractor value
    assert t.words[n + 1] == ["left", "right"]
    for r, row in zip(records, t.labels[:, n:].tolist(), strict=True):
        assert [t.words[n + k][v] for k, v in enumerate(row)] == [
            r.scene[k] for k in ("pose", "facing", "background")
        ]


def test_word_readout_scores_values_by_the_decoders_embeddings(world):
    from selfsynth.basevlm.probe import PartProbe

    s, tok, model, feats, triples = _setup(world)
    parts = base_data.part_targets_for(base_data.load_records(world))
    probe = pretrain._make_probe(model, tok, parts, "words")
    embedding = model.get_input_embeddings()
    # the embedding stays the decoder's: not a parameter of the probe (AdamW would see it twice)
    assert all(p is not embedding.weight for p in probe.parameters())
    image = model.model.multi_modal_projector(feats[:4])
    logits = probe(image)
    assert [x.shape for x in logits] == [(4, n) for n in parts.classes]
    probe.loss(image, parts.labels[:4]).backward()
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0
    # the readout is the cosine with the mean embedding of the value's tokens, times the scale
    red = tok(" " + parts.words[0][0], add_special_tokens=False)["input_ids"]
    assert len(red) >= 1
    with pytest.raises(ValueError, match="probe_readout"):
        pretrain._make_probe(model, tok, parts, "poetry")
    with pytest.raises(ValueError, match="words"):
        pretrain._make_probe(model, tok, base_data.part_targets([], [], {}), "words")
    assert not PartProbe(8, [2, 3]).words


def test_nonce_names_are_not_species_words():
    from selfsynth.data.world.species import FIRST_WORDS, GENUS_WORDS

    real = {w.lower() for w in FIRST_WORDS + GENUS_WORDS}
    rng = random.Random(0)
    names = [base_data.nonce_name(rng) for _ in range(300)]
    assert len(set(names)) > 280  # far too many to memorise: the model has to copy them
    for name in names:
        assert not [r for w in name.lower().split() for r in real if r in w or w in r], name


def test_drill_names_use_the_species_name_words_but_never_an_avoided_label():
    from selfsynth.data.world.species import FIRST_WORDS, GENUS_WORDS

    rng = random.Random(0)
    avoid = frozenset(f"{a} {b}".lower() for a in FIRST_WORDS[:30] for b in GENUS_WORDS)
    names = [base_data.drill_name(rng, avoid) for _ in range(400)]
    words = {w for n in names for w in n.split()}
    assert len(words & set(FIRST_WORDS)) > 40 and len(words & set(GENUS_WORDS)) > 30
    assert not [n for n in names if n.lower() in avoid]


def test_epoch_batches_cover_every_example_once_and_are_seeded():
    lengths = [random.Random(i).randint(5, 50) for i in range(100)]
    a = pretrain.epoch_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(100))
    assert len(a) == 13
    assert a == pretrain.epoch_batches(lengths, 8, seed=1, epoch=0)
    assert a != pretrain.epoch_batches(lengths, 8, seed=1, epoch=1)


def _setup(world, **over):
    s = tiny.settings_from(**{**TINY, **over})
    records = base_data.load_records(world)
    tok = train_tokenizer(base_data.tokenizer_corpus(world, s), vocab_size=s.vocab_size)
    model = tiny.build_architecture(tok, s)
    # random stand-ins for tower features: the loop never runs the tower
    feats = torch.randn(len(records), 16, model.config.vision_config.hidden_size)
    triples = base_data.make_triples(world, records, seed=0)
    return s, tok, model, feats, triples


def _eval_loss(model, tok, feats, triples):
    rows = [r for r in pretrain.tokenize_triples(tok, triples[:32], image_tokens=16, max_length=512) if r]
    ids, attn, labels = pretrain.collate(rows, tok.pad_token_id)
    with torch.no_grad():
        return float(pretrain.vlm_loss(model, feats[[t.image for t in triples[:32]]], ids, attn, labels))


def test_collate_rounds_the_width_up_and_masks_prompt_and_padding():
    rows = [([5, 6, 7, 8, 9], 2), ([5, 6, 7], 1)]
    ids, attn, labels = pretrain.collate(rows, 0, multiple=16)
    assert ids.shape == attn.shape == labels.shape == (2, 16)
    assert attn.sum(1).tolist() == [5, 3]
    assert labels[0].tolist()[:6] == [-100, -100, 7, 8, 9, -100] and (labels[:, 5:] == -100).all()
    assert pretrain.collate(rows, 0)[0].shape == (2, 5)


def test_vocabulary_rows_padded_to_a_multiple_give_the_same_loss(world):
    s, tok, model, feats, triples = _setup(world)
    rows = [r for r in pretrain.tokenize_triples(tok, triples[:8], image_tokens=16, max_length=512) if r]
    ids, attn, labels = pretrain.collate(rows, tok.pad_token_id, multiple=16)
    f = feats[[t.image for t in triples[:8]]]
    with torch.no_grad():
        plain = float(pretrain.vlm_loss(model, f, ids, attn, labels))
        padded = float(pretrain.vlm_loss(model, f, ids, attn, labels, multiple=64))
    assert padded == pytest.approx(plain, rel=1e-6)


def test_ten_pretraining_steps_lower_the_loss_and_keep_the_tower(world):
    s, tok, model, feats, triples = _setup(world)
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    before = _eval_loss(model, tok, feats, triples)
    settings = pretrain.TrainSettings(steps=10, batch_size=8, lr=1e-2, warmup_steps=2)
    parts = base_data.part_targets_for(base_data.load_records(world))
    result = pretrain.pretrain(model, tok, feats, triples, settings, parts=parts)
    assert _eval_loss(model, tok, feats, triples) < before - 0.5
    assert result.steps == 10 and result.losses  # one logged window of 10 steps
    after = model.model.vision_tower.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in tower_before.items())


def test_describe_prompts_get_noun_first_descriptions_of_every_visible_part(world):
    from selfsynth.data.world.vocab import parse_attributes
    from selfsynth.prompts import pools_for

    records = base_data.load_records(world)
    describe = set(pools_for("birds").describe)
    for form in ("clauses", "captions"):
        triples = base_data.make_triples(world, records, seed=0, describe_targets=form)
        full = [t for t in triples if t.question in describe]
        assert len(full) == 4 * len(records)
        for t in full:
            rec = records[t.image]
            got = parse_attributes(t.answer)
            assert got == {p: rec.attributes[p] for p in rec.visible_parts}, t.answer
            # noun-first clauses ("its crown is red"), not the captions' "a red crown"
            clause = re.search(r"\b(its|the) \w+( \w+)? (is|are)\b", t.answer, re.IGNORECASE)
            assert bool(clause) == (form == "clauses"), t.answer
    with pytest.raises(ValueError, match="describe_targets"):
        base_data.make_triples(world, records, describe_targets="poems")


def test_text_drills_are_text_only_and_answerable_from_the_prompt(world):
    from selfsynth.metrics.choice import read_choice

    records = base_data.load_records(world)
    drills = base_data.text_drills(records, seed=0, n=60)
    assert len(drills) == 60 and all(t.image == -1 for t in drills)
    kinds = {"choice": 0, "label": 0}
    for t in drills:
        if "Answer with the option's letter." in t.question:
            # "Hint: brown.\n<question>\nA. red\nB. brown ...": the answer states the hinted option
            hint = t.question.split("\n", 1)[0].split(": ", 1)[1].rstrip(".")
            options = dict(
                line.split(". ", 1) for line in t.question.split("\n") if re.match(r"[A-D]\. ", line)
            )
            assert options[read_choice(t.answer, options)] == hint
            kinds["choice"] += 1
        else:  # a made-up label the answer must repeat
            words = [w.strip(".,") for w in t.answer.split() if w[:1].isupper()]
            assert any(w in t.question for w in words[1:]), t
            kinds["label"] += 1
    assert min(kinds.values()) > 0


def test_killed_pretraining_resumes_to_the_same_weights(world, tmp_path):
    # 3 text-only steps, then 6 image steps (with 4 text rows each); killed in the image phase,
    # resumed at the boundary
    settings = pretrain.TrainSettings(
        steps=6,
        text_steps=3,
        text_mix=4,
        text_batch_size=4,
        probe_readout="words",
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        checkpoint_every=3,
    )
    _, tok, model, feats, triples = _setup(world)
    records = base_data.load_records(world)
    parts = base_data.part_targets_for(records)
    text = base_data.text_drills(records, seed=0, n=40)
    pretrain.pretrain(model, tok, feats, triples, settings, parts=parts, text=text)
    want = model.state_dict()

    class Killed(Exception):
        pass

    def kill_at_5(step, loss):
        if step == 5:
            raise Killed

    _, tok2, model2, _, _ = _setup(world)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        pretrain.pretrain(
            model2, tok2, feats, triples, settings, parts=parts, text=text, checkpoint=ckpt, on_step=kill_at_5
        )
    assert torch.load(ckpt, weights_only=True)["step"] == 3  # tensors and plain containers only
    _, tok3, model3, _, _ = _setup(world)  # a fresh process: rebuilt model, resumed from the checkpoint
    pretrain.pretrain(model3, tok3, feats, triples, settings, parts=parts, text=text, checkpoint=ckpt)
    got = model3.state_dict()
    assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)


def test_default_build_fingerprint_is_pinned_and_every_other_value_changes_it(monkeypatch):
    default = tiny.settings_from()
    # the cache folder of the default build is base-<fingerprint>: it must not move
    assert default.fingerprint() == "79f64baf5dd820b5"
    # only the unhashed settings, at their default values, are left out of the hash
    fields = {k: v for k, v in dataclasses.asdict(default).items() if k not in tiny._UNHASHED_DEFAULTS}
    assert default.fingerprint() == tiny.fingerprint({"version": tiny.BUILD_VERSION, **fields})
    for over in (
        {"attention": "sdpa"},
        {"text_batch_size": 16},
        {"describe_targets": "clauses"},
        {"probe_readout": "linear"},
        {"probe_scene": False},
        {"steps": 1000},
    ):
        assert dataclasses.replace(default, **over).fingerprint() != default.fingerprint(), over
    monkeypatch.setattr(tiny, "BUILD_VERSION", tiny.BUILD_VERSION + 1)
    assert default.fingerprint() != "79f64baf5dd820b5"


def test_settings_reject_unknown_names():
    with pytest.raises(ConfigError, match="hidden_sise"):
        tiny.settings_from(hidden_sise=3)
    with pytest.raises(ConfigError, match="probe_readout='word'.*linear, words"):
        tiny.settings_from(probe_readout="word")
    with pytest.raises(ConfigError, match="attention"):
        tiny.settings_from(attention="flash")


def test_build_is_cached_and_loads_with_auto_classes(tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from selfsynth.cli import main

    out = tmp_path / "base"
    args = [
        "base",
        "build",
        "--out",
        str(out),
        "--species",
        "2",
        "--train-per-class",
        "3",
        "--steps",
        "4",
        "--hidden-size",
        "32",
        "--heads",
        "2",
        "--layers",
        "1",
        "--vocab-size",
        "400",
        "--batch-size",
        "8",
    ]
    assert main(args) == 0
    manifest = (out / tiny.MANIFEST).read_text()
    assert not (out / "_work").exists()
    assert isinstance(AutoModelForImageTextToText.from_pretrained(out).config.image_token_id, int)
    assert AutoProcessor.from_pretrained(out).tokenizer.image_token == IMAGE_TOKEN

    def no_training(*a, **k):
        raise AssertionError("a cached build must not train again")

    monkeypatch.setattr(pretrain, "pretrain", no_training)
    assert main(args) == 0
    assert (out / tiny.MANIFEST).read_text() == manifest
    assert main([*args[:-1], "16"]) == 2  # other settings into the same folder: refused without --force


def test_killed_build_resumes_from_its_work_folder(tmp_path, monkeypatch):
    import selfsynth.data.world as world_pkg

    s = tiny.settings_from(**TINY)
    out = tmp_path / "base"
    real_pretrain = pretrain.pretrain

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "pretrain", killed)
    with pytest.raises(KeyboardInterrupt):
        tiny.build_base_model(out, s, threads=1)
    work = out / "_work"
    assert (work / "world" / "world.json").is_file() and (work / "features.pt").is_file()
    assert not tiny.is_built(out)

    def no_redraw(*a, **k):
        raise AssertionError("the world was drawn again")

    monkeypatch.setattr(pretrain, "pretrain", real_pretrain)
    monkeypatch.setattr(world_pkg, "make_world", no_redraw)
    manifest = tiny.build_base_model(out, s, threads=1)
    assert tiny.is_built(out, s) and manifest["fingerprint"] == s.fingerprint()
    assert manifest["precision"] in ("bf16", "fp32") and manifest["cpu_capability"]
    assert manifest["cpu_capability"] in manifest["machine"]
    assert not work.exists()


def test_attribute_scores_count_right_wrong_and_hidden_statements(world):
    from selfsynth.basevlm.evaluate import attribute_scores, distinct_n
    from selfsynth.io import read_jsonl

    rows = read_jsonl(world / "train.jsonl")
    caps = {r["id"]: r["captions"][0] for r in read_jsonl(world / "captions.jsonl")}
    own = attribute_scores([caps[r["id"]] for r in rows], rows)
    assert own["attribute_accuracy"] == 1.0 and own["parts_mentioned"] > 0  # captions tell the truth
    swapped = attribute_scores([caps[r["id"]] for r in rows[::-1]], rows)
    assert swapped["attribute_accuracy"] < 1.0  # another bird's caption is partly wrong
    assert distinct_n(["a b c d e", "a b c d e"]) == 0.5 and distinct_n(["a b"]) == 0.0


def test_base_build_command_passes_the_experiment_settings(tmp_path, monkeypatch, capsys):
    from selfsynth.cli import main

    seen = {}

    def fake_build(out, settings, *, force, threads, progress):
        seen.update(out=out, settings=settings, progress=progress)
        return {
            "fingerprint": settings.fingerprint(),
            "parameters": 2,
            "trainable_parameters": 1,
            "seconds": 0,
        }

    monkeypatch.setattr(tiny, "build_base_model", fake_build)
    argv = ["base", "build", "--out", str(tmp_path / "b"), "--attention", "eager", "--text-batch-size", "16"]
    assert main([*argv, "--describe-targets", "clauses", "--probe-readout", "linear"]) == 0
    s = seen["settings"]
    assert (s.attention, s.text_batch_size, s.describe_targets, s.probe_readout) == (
        "eager",
        16,
        "clauses",
        "linear",
    )
    assert s.fingerprint() in capsys.readouterr().out
    assert seen["progress"] is True
    assert main([*argv, "--no-progress", "--force"]) == 0 and seen["progress"] is False
