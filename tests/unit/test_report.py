"""The report of one run and the comparison of several, on fabricated run directories."""

from __future__ import annotations

import json
import shutil

import pytest
from report_fixtures import check_html, make_run

from selfsynth.cli import main
from selfsynth.errors import SelfsynthError
from selfsynth.report import compare_runs, write_report
from selfsynth.report.load import load_run
from selfsynth.report.plots import Series, line_chart


def test_write_report_tables_and_html(tmp_path):
    run = make_run(tmp_path)
    out = write_report(run)
    md = (run / "results.md").read_text(encoding="utf-8")
    page = (run / "report.html").read_text(encoding="utf-8")
    assert out["rounds"] == 2 and out["report_html"].endswith("report.html")
    header, rows = out["table"]["header"], out["table"]["rows"]
    assert (
        header[:3] == ["Method", "Acc. sub. %", "Acc. strict %"]
        and "Halluc." in header
        and "FS (ppl)" in header
    )
    assert [r[0] for r in rows] == ["Base", "Ours R2"]
    final = json.loads((run / "round_2" / "evaluate" / "metrics.json").read_text())
    ours = dict(zip(header, rows[1], strict=True))
    assert ours["Acc. strict %"] == f"{100 * final['acc_strict']:.1f}"
    assert ours["EE"] == f"{final['ee']:.2f}" and ours["General %"] == "50.0"
    assert ours["Ground. P"] == f"{final['ground_precision']:.2f}" and ours["FS (ppl)"] == "–"
    assert "| Ours R2 |" in md and "Accuracy per round" in md and "| R1 |" in md

    c = check_html(page)
    assert c.tags.get("svg", 0) >= 2  # accuracy and explanation charts
    assert len(c.images) == 6  # 3 test answers + 3 training images with Z*
    assert 'class="confusion"' in page
    assert '<mark class="good"' in page and '<mark class="bad"' in page  # visible vs hallucinated
    assert "chip bad" in page and "red crown" in page
    assert "base model" in page  # before/after for the same image
    assert "Z*" in page and "conical beak" in page
    assert "example.org" in page  # a URL a model wrote is shown, but defused


def test_report_is_cheap_to_regenerate_and_handles_missing_images(tmp_path):
    run = make_run(tmp_path)
    shutil.rmtree(tmp_path / "world" / "demo")
    write_report(run)
    c = check_html((run / "report.html").read_text(encoding="utf-8"))
    assert c.images == [] and "image not available" in (run / "report.html").read_text(encoding="utf-8")


def test_report_reads_what_the_runs_format_offers(tmp_path):
    from selfsynth.data import Capabilities, get_capabilities

    run = make_run(tmp_path)
    assert load_run(run).capabilities == get_capabilities("world")  # an old run names only its format
    data = json.loads((run / "results.json").read_text())
    data["config"]["data"]["format"] = "a_plugin_not_loaded_here"
    (run / "results.json").write_text(json.dumps(data))
    assert load_run(run).capabilities == Capabilities()
    write_report(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "clauses citing an expert concept" in page and "cited and visible" not in page


def test_run_in_progress_without_results_json(tmp_path):
    run = make_run(tmp_path, rounds=3)
    data = json.loads((run / "results.json").read_text())
    data["rounds"] = data["rounds"][:1]  # results.json lags behind the evaluate folders
    (run / "results.json").write_text(json.dumps(data))
    assert [m["round"] for m in load_run(run).rounds] == [1, 2, 3]
    (run / "results.json").unlink()
    loaded = load_run(run)
    assert loaded.base is not None and len(loaded.rounds) == 3 and loaded.name == "demo"
    write_report(run)
    check_html((run / "report.html").read_text(encoding="utf-8"))


def test_not_a_run_directory(tmp_path):
    with pytest.raises(SelfsynthError, match="no such run directory"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfsynthError, match="is this a run directory"):
        write_report(tmp_path / "empty")


def test_compare_methods_and_seeds(tmp_path):
    a = make_run(tmp_path, "ours_s0", "ours", seed=0)
    b = make_run(tmp_path, "ours_s1", "ours", seed=1, shift=0.05)
    nl = make_run(tmp_path, "nl", "nl", rounds=1)
    out = compare_runs([b, nl, a], tmp_path / "cmp")
    labels = [r[0] for r in out["table"]["rows"]]
    assert labels[0] == "Base"
    assert labels[1] == "NL R1"  # paper order: Base, NL, L+GE, Ours, No filtering
    assert "Ours (ours_s0) R2" in labels and "Ours (ours_s1) R2" in labels
    mean_row = next(r for r in out["table"]["rows"] if r[0].startswith("Ours (mean ± sd, 2 runs)"))
    assert "±" in mean_row[1]
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "mean ± sd" in md
    c = check_html((tmp_path / "cmp" / "compare.html").read_text(encoding="utf-8"))
    assert c.tags.get("svg", 0) >= 3
    with pytest.raises(SelfsynthError, match="given twice"):
        compare_runs([a, a], tmp_path / "cmp2")


def test_cli_report_and_compare(tmp_path, capsys):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", "nofilter")
    assert main(["report", str(a)]) == 0
    printed = capsys.readouterr().out
    assert "Ours R2" in printed and "report.html" in printed
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r[0] for r in data["table"]["rows"]][-1] == "No filtering R2"
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_line_chart_svg():
    svg = line_chart(
        [Series("a", [(0, 0.1), (1, 0.5), (2, 0.9)]), Series("b", [(1, 0.3)], dashed=True)],
        title="t <x>",
        x_labels={0: "Base", 1: "R1", 2: "R2"},
        y_range=(0, 1),
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "t &lt;x&gt;" in svg
    assert svg.count("<circle") == 4 and "stroke-dasharray" in svg and "xmlns" not in svg
    assert "no data" in line_chart([Series("a", [])], title="empty")


EVIL = "<script>alert(1)</script>|x **bold** [link](javascript:y) _em_"


def _unescaped_pipes(line: str) -> int:
    return line.count("|") - line.count("\\|")


def test_labels_and_answers_cannot_inject_markdown_or_html(tmp_path):
    run = make_run(tmp_path)
    data = json.loads((run / "results.json").read_text())
    data["name"] = EVIL
    (run / "results.json").write_text(json.dumps(data))
    (run / "general").mkdir()
    (run / "general" / "bench.json").write_text(
        json.dumps({"name": EVIL, "model": "m", "accuracy": 0.5, "n": 2})
    )
    final = run / "round_2" / "evaluate"
    metrics = json.loads((final / "metrics.json").read_text())
    metrics["per_class"] = {EVIL: {"n": 1, "acc_substring": 1.0, "acc_strict": 1.0}}
    metrics["confusion"] = {"labels": [EVIL], "columns": [EVIL, "none"], "counts": [["<i>2</i>", 1]]}
    (final / "metrics.json").write_text(json.dumps(metrics))
    rows = [json.loads(line) for line in (final / "samples.jsonl").read_text().splitlines()]
    rows[0].update(label=EVIL, pred=EVIL, answer=f"It is {EVIL}.")
    (final / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(run)

    md = (run / "results.md").read_text(encoding="utf-8")
    escaped = r"\<script\>alert(1)\</script\>\|x \*\*bold\*\* \[link\](javascript:y) \_em\_"
    assert f"# Results: {escaped}" in md and f"| {escaped} |" in md  # H1 and the general-ability table
    assert "<script>" not in md and "**bold**" not in md
    for table in md.split("### ")[1:]:
        lines = [x for x in table.splitlines() if x.startswith("|")]
        assert len({_unescaped_pipes(x) for x in lines}) == 1, table  # no cell splits into two

    page = (run / "report.html").read_text(encoding="utf-8")
    check_html(page)
    assert "<script" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;|x **bold**" in page


def test_gallery_embeds_only_images_under_the_data_root(tmp_path):
    from PIL import Image

    run = make_run(tmp_path)
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    final = run / "round_2" / "evaluate" / "samples.jsonl"
    rows = [json.loads(line) for line in final.read_text().splitlines()]
    rows[0]["image"], rows[1]["image"] = "/etc/hostname", str(outside)
    final.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(run)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert len(check_html(page).images) == 4  # one test image left, plus 3 training images
    assert page.count("image outside the data root: not embedded") == 2


def test_relative_data_root_is_found_from_another_folder(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    data = json.loads((run / "results.json").read_text())
    data["config"]["data"]["root"] = (
        "world"  # as given on the command line, relative to where the run started
    )
    (run / "results.json").write_text(json.dumps(data))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    write_report(run)
    assert len(check_html((run / "report.html").read_text(encoding="utf-8")).images) == 6


def test_skipped_bad_records_reach_results_and_report(tmp_path):
    """Images data.skip_bad left out are listed in results.json and counted in results.md and report.html."""
    from fixtures_data import build_imagefolder, truncated_jpeg

    from selfsynth.config import RunConfig
    from selfsynth.pipeline import load_context

    root = build_imagefolder(tmp_path / "data")
    bad = truncated_jpeg(root / "train" / "cat" / "broken.jpg")
    cfg = RunConfig()
    cfg.data.format, cfg.data.root, cfg.data.skip_bad = "imagefolder", str(root), True
    ctx = load_context(cfg, tmp_path / "run", progress=False)
    assert [s["file"] for s in ctx.skipped if bad.name in str(s["file"])], ctx.skipped
    assert all(e.image != str(bad) for e in ctx.train + ctx.test)

    run = make_run(tmp_path / "r")
    results = json.loads((run / "results.json").read_text())
    results["data_skipped"] = ctx.skipped
    (run / "results.json").write_text(json.dumps(results))
    write_report(run)
    n = len(ctx.skipped)
    assert f"{n} bad records skipped" in (run / "results.md").read_text()
    assert f"{n} bad records skipped" in (run / "report.html").read_text()


def test_citations_per_stage_show_where_hallucinations_enter(tmp_path):
    from report_fixtures import add_stage_grounding

    run = make_run(tmp_path)
    write_report(run)
    assert "Citations per stage" not in (run / "results.md").read_text()  # a run from before the figures
    results = add_stage_grounding(run)
    assert set(results["rounds"][1]["grounding_by_stage"]) == {"sample", "evaluate"}
    write_report(run)
    md = (run / "results.md").read_text(encoding="utf-8")
    table = md.split("### Citations per stage")[1].split("###")[0]
    head = (
        "| Stage | Answers | Fallbacks | Cited / answer | In class | P (visible) | R (visible) | Grounded % |"
    )
    assert head in table
    # Z*: red crown / conical beak for the Red Finches, blue crown / black mask for the Blue Tit
    assert "| Z\\* (select) | 3 | – | 2.00 | – | 0.50 | 0.75 | 33.3 | – | – |" in table
    assert "| Base evaluate | 3 | – | 0.33 | 1.00 | 0.00 | 0.00 | 0.0 | – | – |" in table
    # round 1 copies Z*'s blue crown, which the image does not show; the label fallback is left out
    assert "| R1 synthesize (train) | 2 | 1 | 2.00 | 1.00 | 0.75 | 1.00 | 50.0 | 1.00 | 1.00 |" in table
    # round 2's winners cite outside Z*: a visible concept and another species' one
    assert "| R2 sample (train) | 3 | 0 | 1.67 | 0.80 | 0.80 | 1.00 | 33.3 | 0.60 | 0.50 |" in table
    # the test answers: one cites another species' red crown, one a single concept; no Z* for test images
    assert "| R2 evaluate | 3 | – | 1.67 | 0.80 | 0.80 | 1.00 | 33.3 | – | – |" in table
    page = (run / "report.html").read_text(encoding="utf-8")
    check_html(page)
    assert "Citations per stage" in page and "<td>R2 sample (train)</td><td>3</td><td>0</td>" in page


def test_citations_per_stage_without_visibility_keep_the_zstar_columns(tmp_path):
    from report_fixtures import add_stage_grounding

    run = make_run(tmp_path)
    add_stage_grounding(run, visibility=False)
    write_report(run)
    table = (run / "results.md").read_text(encoding="utf-8").split("### Citations per stage")[1]
    assert "P (visible)" not in table and "Grounded %" not in table.split("\n\n")[1]
    assert "| R2 sample (train) | 3 | 0 | 1.67 | 0.80 | 0.60 | 0.50 |" in table


def test_grounded_rate_in_the_tables_and_backfilled_for_older_runs(tmp_path):
    run = make_run(tmp_path)
    final = json.loads((run / "round_2" / "evaluate" / "metrics.json").read_text())
    # of the three answers only the first cites two concepts, both visible
    assert final["grounded_rate"] == pytest.approx(1 / 3)
    for f in [run / "results.json", *run.glob("*/evaluate/metrics.json")]:
        data = json.loads(f.read_text())
        for m in [data, data.get("base") or {}, *data.get("rounds", [])]:
            m.pop("grounded_rate", None)
        f.write_text(json.dumps(data))
    loaded = load_run(run)  # an evaluation from before the metric: recomputed from samples.jsonl
    assert [m["grounded_rate"] for m in [loaded.base, *loaded.rounds]] == pytest.approx([0.0, 1 / 3, 1 / 3])
    out = write_report(run)
    ours = dict(zip(out["table"]["header"], out["table"]["rows"][1], strict=True))
    assert ours["Grounded %"] == "33.3" and ours["EE"] == "1.00"  # EE saturates, the rate does not
    assert "| R2 |" in (run / "results.md").read_text()
    data = json.loads((run / "results.json").read_text())
    data["config"]["data"]["format"] = "a_plugin_not_loaded_here"  # no visibility: nothing to recompute
    (run / "results.json").write_text(json.dumps(data))
    assert all("grounded_rate" not in m for m in load_run(run).rounds)


def test_the_rl_round_is_a_row_of_the_per_round_table(tmp_path):
    run = make_run(tmp_path)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    rl = {**results["rounds"][-1], "acc_substring": 0.987, "training": {"steps": 3, "reward_last": 0.5}}
    del rl["round"]
    results["rl"] = rl
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert load_run(run).rl["acc_substring"] == 0.987 and "training" not in load_run(run).rl
    write_report(run)
    md = (run / "results.md").read_text(encoding="utf-8")
    rows = [line for line in md.splitlines() if line.startswith("| RL |")]
    assert len(rows) == 1 and "98.7" in rows[0]
    plain = make_run(tmp_path / "plain")
    write_report(plain)
    assert "| RL |" not in (plain / "results.md").read_text(encoding="utf-8")
