"""``selfsynth chat``: one-shot JSON, follow-ups from stdin, evidence, bad images (real CLI, tiny model)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from fixtures_data import EPS, bomb_png, truncated_jpeg
from PIL import Image
from tiny_models import build_llava, make_images

from selfsynth.cli import main
from selfsynth.commands import chat as chat_cmd


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("chat")
    yield build_llava(root / "model"), make_images(root / "images", 1)[0]
    torch.set_num_threads(threads)


class Scripted:
    """A model double that records every conversation it is shown."""

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []

    def chat(self, image, messages, **kw):
        self.seen.append(([dict(m) for m in messages], image.size, kw))
        return self.answers.pop(0)


def _args(*argv):
    from selfsynth.cli import build_parser

    return build_parser().parse_args(["chat", *argv])


def test_json_one_shot_with_the_tiny_model(model, capsys):
    model_dir, image = model
    assert main(["chat", str(model_dir), "--image", str(image), "--json", "--max-new-tokens", "6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "evidence", "model"}
    assert isinstance(out["answer"], str) and out["evidence"] == [] and out["model"] == str(model_dir)


def test_follow_ups_from_stdin_until_eof(model, capsys, monkeypatch):
    from selfsynth.models.vlm import VLM

    model_dir, image = model
    turns, real = [], VLM.chat

    def spy(self, image, messages, **kw):
        turns.append([m["role"] for m in messages])
        return real(self, image, messages, **kw)

    monkeypatch.setattr(VLM, "chat", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("why?\n\nwhat colour is it?\n"))
    assert main(["chat", str(model_dir), "--image", str(image), "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.strip()
    # one model call per question (the blank line is skipped), each with the whole conversation so far
    assert turns == [
        ["user"],
        ["user", "assistant", "user"],
        ["user", "assistant", "user", "assistant", "user"],
    ]


def test_conversation_keeps_image_and_history_and_marks_evidence(tmp_path, monkeypatch, capsys):
    image = tmp_path / "bird.png"
    Image.new("RGB", (20, 10), "red").save(image)
    bank = tmp_path / "concepts.json"
    bank.write_text(json.dumps({"Scarlet Finch": ["red crown"], "Blue Robin": ["blue back"]}))
    vlm = Scripted(["A Scarlet Finch with a red crown.", "Its blue back."])
    monkeypatch.setattr("sys.stdin", io.StringIO("and the back?\n"))
    args = _args(str(tmp_path), "--image", str(image), "--concepts", str(bank), "--temperature", "0.5")
    assert chat_cmd.run(args, vlm=vlm) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "A Scarlet Finch with a red crown.",
        "evidence: Scarlet Finch; red crown",
        "Its blue back.",
        "evidence: blue back",
    ]
    first, second = vlm.seen
    assert first[0] == [{"role": "user", "content": "What is this? Explain why."}]
    assert second[0][-2:] == [
        {"role": "assistant", "content": "A Scarlet Finch with a red crown."},
        {"role": "user", "content": "and the back?"},
    ]
    assert second[1] == (20, 10) and second[2]["temperature"] == 0.5 and second[2]["max_new_tokens"] == 128


def test_json_evidence_lists_cited_concepts(tmp_path, capsys):
    image = tmp_path / "bird.png"
    Image.new("RGB", (8, 8)).save(image)
    bank = tmp_path / "c.json"
    bank.write_text(json.dumps({"Blue Robin": ["blue back", "long tail"]}))
    args = _args(
        str(tmp_path), "--image", str(image), "--concepts", str(bank), "--json", "--question", "What?"
    )
    vlm = Scripted(["It has a long tail and a blue back."])
    assert chat_cmd.run(args, vlm=vlm) == 0
    assert json.loads(capsys.readouterr().out)["evidence"] == ["long tail", "blue back"]
    assert vlm.seen[0][0] == [{"role": "user", "content": "What?"}]


@pytest.mark.parametrize("content", [None, b"not an image", b"\x89PNG\r\n\x1a\n truncated"])
def test_missing_or_corrupt_image_is_one_line_exit_2(tmp_path, capsys, content):
    image = tmp_path / "x.png"
    if content is not None:
        image.write_bytes(content)
    assert main(["chat", str(tmp_path / "no-model"), "--image", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(image) in err
    assert ("not found" in err) if content is None else ("not a readable image" in err)


@pytest.mark.parametrize("kind", ["bomb", "truncated", "eps"])
def test_hostile_image_is_one_line_exit_2_before_any_model_loads(tmp_path, capsys, kind):
    image = tmp_path / ("x.png" if kind == "bomb" else "x.jpg")
    if kind == "bomb":
        bomb_png(image)
    elif kind == "truncated":
        truncated_jpeg(image)
    else:
        image.write_bytes(EPS)
    assert main(["chat", str(tmp_path / "no-model"), "--image", str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(image) in err and "not a readable image" in err
    assert "pass a PNG or JPEG file" in err and "skip_bad" not in err


def test_missing_model_dir_is_exit_2(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["chat", str(tmp_path / "nowhere"), "--image", str(image)]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_no_repeat_ngram_reaches_the_model_with_the_banks_class_names(tmp_path, monkeypatch, capsys):
    image = make_images(tmp_path / "images", 1)[0]
    bank = tmp_path / "concepts.json"
    bank.write_text(json.dumps({"Tern": ["black cap"], "Gull": ["grey wings"]}))
    fake = Scripted(["This is a Tern. It has a black cap."])
    args = _args("m", "--image", str(image), "--json", "--concepts", str(bank), "--no-repeat-ngram", "3")
    assert chat_cmd.run(args, vlm=fake) == 0
    kw = fake.seen[0][2]
    assert kw["no_repeat_ngram"] == 3 and sorted(kw["allow_repeats"]) == ["Gull", "Tern"]
    plain = Scripted(["x"])
    assert chat_cmd.run(_args("m", "--image", str(image), "--json", "--concepts", str(bank)), vlm=plain) == 0
    assert "no_repeat_ngram" not in plain.seen[0][2]  # off unless asked for
    capsys.readouterr()
    assert main(["chat", "m", "--image", str(image), "--no-repeat-ngram", "-1"]) == 2
    assert "--no-repeat-ngram >= 0" in capsys.readouterr().err


def test_vlm_chat_turns_class_names_into_exempt_token_pairs(model, monkeypatch):
    from selfsynth.models.vlm import VLM

    model_dir, image = model
    vlm = VLM.load(model_dir)
    seen = {}
    real = vlm._run
    monkeypatch.setattr(vlm, "_run", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    turn = [{"role": "user", "content": "describe the image ."}]
    out = vlm.chat(image, turn, max_new_tokens=8, no_repeat_ngram=2, allow_repeats=["red finch"])
    assert isinstance(out, str) and seen["no_repeat_ngram"] == 2
    assert seen["allowed_pairs"] == vlm._pairs(["red finch"]) and seen["allowed_pairs"]
    seen.clear()
    vlm.chat(image, turn, max_new_tokens=4, allow_repeats=["red finch"])  # no guard: no pairs
    assert "allowed_pairs" not in seen
