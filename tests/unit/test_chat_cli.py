"""``selfsynth chat``: one-shot JSON, follow-ups from stdin, evidence, bad images (real CLI, tiny model)."""

from __future__ import annotations

import io
import json

import pytest
import torch
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


def test_missing_model_dir_is_exit_2(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["chat", str(tmp_path / "nowhere"), "--image", str(image)]) == 2
    assert "model directory not found" in capsys.readouterr().err
