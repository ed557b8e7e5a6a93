"""General ability: the VLMEvalKit TSV scorer with a fake VLM, its CLI, and the lmms-eval command."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from PIL import Image

from selfsynth.cli import main
from selfsynth.errors import DataError
from selfsynth.metrics.benchmark import PAPER_TASKS, evaluate_items, lmms_eval_command, read_tsv


def _png(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


HEADER = ["index", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "image"]
ROWS = [
    ["1", "What colour is the square?", "", "red", "green", "blue", "", "", "A", "colour", _png((255, 0, 0))],
    ["2", "Is it bright?", "Look at the pixels.", "yes", "no", "", "", "", "B", "light", _png((0, 0, 0))],
    ["3", "Which shape?", "", "circle", "square", "line", "dot", "star", "E", "shape", "1"],  # image of row 1
    ["4", "What colour now?", "", "red", "green", "blue", "", "", "C", "colour", _png((0, 0, 255))],
]
# What the fake model says, by question; row 4's answer names an option's text, not a letter.
ANSWERS = {
    "What colour is the square?": "A",
    "Is it bright?": "The answer is A. yes",  # wrong
    "Which shape?": "E) star",
    "What colour now?": "It is blue.",
}


def write_tsv(path, rows=ROWS, header=HEADER) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    return str(path)


class FakeVLM:
    """Answers from a dict keyed by the question inside the prompt; records what it was given."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.prompts: list[str] = []
        self.images: list = []

    def generate(self, images, prompts, *, n=1, temperature=0.0, max_new_tokens=16, batch_size=16, **kw):
        assert temperature == 0.0 and n == 1 and len(images) == len(prompts)
        self.prompts += prompts
        self.images += images
        out = []
        for p in prompts:
            q = next(q for q in self.answers if q in p)
            out.append([self.answers[q]])
        return out


def test_scores_a_tsv_with_known_answers(tmp_path):
    items = read_tsv(write_tsv(tmp_path / "bench.tsv"))
    assert [it.index for it in items] == ["1", "2", "3", "4"]
    assert list(items[0].options) == ["A", "B", "C"] and list(items[2].options) == list("ABCDE")
    assert items[2].image == items[0].image  # MMBench-style image reference
    vlm = FakeVLM(ANSWERS)
    summary, rows = evaluate_items(vlm, items, batch_size=2, progress=False)
    assert summary["n"] == 4
    assert summary["accuracy"] == pytest.approx(3 / 4)
    assert summary["unparsed"] == 0
    assert summary["per_category"] == {
        "colour": {"n": 2, "accuracy": 1.0},
        "light": {"n": 1, "accuracy": 0.0},
        "shape": {"n": 1, "accuracy": 1.0},
    }
    assert [r["pred"] for r in rows] == ["A", "A", "E", "C"]
    hinted = vlm.prompts[1]
    assert hinted.startswith("Hint: Look at the pixels.\nIs it bright?\nA. yes\nB. no\n")
    assert hinted.endswith("Answer with the option's letter.")
    assert "C." not in hinted  # empty options are left out
    assert vlm.images[0].getpixel((0, 0)) == (255, 0, 0)


def test_limit(tmp_path):
    assert len(read_tsv(write_tsv(tmp_path / "b.tsv"), limit=2)) == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r.__setitem__(10, "!!!not base64!!!"),
            "row index 2 (line 3): 'image' is not valid base64",
        ),
        (
            lambda r: r.__setitem__(10, base64.b64encode(b"hello").decode()),
            "row index 2 (line 3): 'image' decodes",
        ),
        (lambda r: r.__setitem__(8, "D"), "row index 2 (line 3): answer 'D' is not one of the options A, B"),
        (lambda r: r.__setitem__(1, ""), "row index 2 (line 3): empty 'question'"),
    ],
)
def test_bad_rows_name_their_index(tmp_path, mutate, message):
    rows = [list(r) for r in ROWS]
    mutate(rows[1])
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_tsv(write_tsv(tmp_path / "bad.tsv", rows))


def test_wrong_field_count_is_named(tmp_path):
    rows = [list(r) for r in ROWS]
    rows[3] = rows[3][:5]
    with pytest.raises(DataError, match=r"row index 4 \(line 5\): wrong number of tab-separated fields"):
        read_tsv(write_tsv(tmp_path / "short.tsv", rows))
    rows[3] = [*ROWS[3], "surplus"]
    with pytest.raises(DataError, match="row index 4 .*wrong number"):
        read_tsv(write_tsv(tmp_path / "long.tsv", rows))


def test_missing_column_is_named(tmp_path):
    header = [h for h in HEADER if h != "answer"]
    rows = [[v for h, v in zip(HEADER, r, strict=True) if h != "answer"] for r in ROWS]
    with pytest.raises(DataError, match="missing column.*answer"):
        read_tsv(write_tsv(tmp_path / "bad.tsv", rows, header))


def test_cli_errors_cleanly_on_a_malformed_tsv(tmp_path, capsys):
    rows = [list(r) for r in ROWS]
    rows[2][10] = "%%%"
    tsv = write_tsv(tmp_path / "bad.tsv", rows)
    code = main(["eval", "general", "--tsv", tsv, "--model", str(tmp_path / "no_model")])
    err = capsys.readouterr().err
    assert code == 2
    assert "row index 3" in err and "base64" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_cli_runs_with_an_injected_model(tmp_path, capsys, monkeypatch):
    from selfsynth.commands import eval as eval_cmd

    fake = FakeVLM(ANSWERS)
    real = eval_cmd.run_general
    monkeypatch.setattr(eval_cmd, "run_general", lambda args: real(args, vlm=fake))
    out = tmp_path / "run" / "general" / "bench.json"
    tsv = write_tsv(tmp_path / "bench.tsv")
    code = main(
        ["eval", "general", "--tsv", tsv, "--model", "m", "--json", "--no-progress", "--out", str(out)]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accuracy"] == pytest.approx(0.75) and summary["name"] == "bench"
    saved = json.loads(out.read_text())
    assert len(saved["items"]) == 4 and saved["items"][1]["output"] == "The answer is A. yes"


def test_lmms_eval_command(capsys):
    cmd = lmms_eval_command("/models/merged llava")
    assert "--model llava_hf" in cmd and "'pretrained=/models/merged llava'" in cmd
    assert "--tasks " + ",".join(PAPER_TASKS) in cmd
    assert main(["eval", "lmms-eval", "--model", "out/final", "--tasks", "mmstar,mme"]) == 0
    printed = capsys.readouterr().out
    assert "lmms_eval" in printed and "--tasks mmstar,mme" in printed and "pretrained=out/final" in printed
