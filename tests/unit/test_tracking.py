"""Experiment tracking: what the loop sends to TensorBoard, W&B (offline), MLflow and trackio, read back
with each library's own reader; once per stage result across resumes; main rank only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import scripted_loop

from selfsynth import distributed, pipeline
from selfsynth.config import load_config
from selfsynth.errors import ConfigError, SelfsynthError
from selfsynth.runs import Stage
from selfsynth.tracking import base as tracking_base
from selfsynth.tracking import open_run_tracker
from selfsynth.tracking.run_tracker import RunTracker

METRICS = {"name": "round_1", "acc_substring": 0.5, "acc_strict": 0.25, "ee": 1.0, "n": 4, "per_class": {}}
SAMPLES = [
    {
        "id": f"t{i}",
        "label": "azure finch",
        "pred": "azure finch",
        "correct_strict": True,
        "answer": f"a {i} | b",
        "cited": ["blue crown", "white wing bars"],
    }
    for i in range(3)
]


def _cfg(run_dir: Path, *report_to: str, **settings: str):
    over = [
        f"tracking.report_to=[{','.join(report_to)}]",
        *(f"tracking.{k}={v}" for k, v in settings.items()),
    ]
    return load_config(None, ["data.root=x", "model.path=y", "name=t", *over])


def _events(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _curve(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)]


def _text(acc, tag: str) -> str:
    from tensorboard.util import tensor_util

    (event,) = acc.Tensors(f"{tag}/text_summary")
    return tensor_util.make_ndarray(event.tensor_proto).item().decode()


def _round(run_dir: Path, tracker: RunTracker, rnd: int = 1) -> None:
    """The calls the loop makes for one round, on stage folders written the way the stages write them."""
    stage = Stage(run_dir, f"round_{rnd}/finetune", f"ft{rnd}")
    if not stage.done():  # a finished stage is skipped: its training runs no more
        stage.begin()
        on_step = tracker.train_logger(rnd)
        for step in range(1, scripted_loop.STEPS + 1):
            row = scripted_loop.train_row(step)
            with open(stage.dir / "train_log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            on_step(row)
        stage.finish()
    tracker.finetune_done(rnd)
    ev = Stage(run_dir, f"round_{rnd}/evaluate", f"ev{rnd}")
    if not ev.done():
        ev.begin()
        (ev.dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SAMPLES))
        ev.finish()
    tracker.evaluated(f"round_{rnd}", rnd, METRICS)


def test_report_to_choices_are_checked_item_by_item():
    assert _cfg(Path("r"), "tensorboard", "wandb").tracking.report_to == ["tensorboard", "wandb"]
    assert load_config(None, ["data.root=x", "model.path=y"]).tracking.report_to == ["none"]
    bare = load_config(None, ["data.root=x", "model.path=y", "tracking.report_to=mlflow,trackio"])
    assert bare.tracking.report_to == ["mlflow", "trackio"]
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        _cfg(Path("r"), "tensorbord")
    with pytest.raises(ConfigError, match="'none' goes alone"):
        _cfg(Path("r"), "none", "mlflow")


def test_a_missing_package_names_its_extra_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(tracking_base.PACKAGES, "wandb", ("selfsynth_no_such_package", "wandb"))
    with pytest.raises(SelfsynthError, match=r"pip install 'selfsynth\[wandb\]'"):
        open_run_tracker(_cfg(tmp_path, "tensorboard", "wandb"), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # checked before TensorBoard started
    with pytest.raises(SelfsynthError, match=r"selfsynth\[wandb\]"):
        tracking_base.require("wandb")


def test_backends_are_imported_only_when_chosen(tmp_path):
    code = (
        "import sys; from selfsynth.config import load_config; from selfsynth.tracking import open_run_tracker\n"
        f"cfg = load_config(None, ['data.root=x', 'model.path=y', 'tracking.report_to=[tensorboard]'])\n"
        f"open_run_tracker(cfg, {str(tmp_path)!r}).close()\n"
        "print(sorted(m for m in ('tensorboard', 'wandb', 'mlflow', 'trackio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tensorboard']"


@pytest.mark.slow  # the whole loop, with a scripted model: about ten seconds
def test_the_loop_tracks_once_per_result_and_a_backend_added_on_resume_catches_up(tmp_path, monkeypatch):
    scripted_loop.register(monkeypatch)
    monkeypatch.setenv(
        "MLFLOW_ALLOW_FILE_STORE", "true"
    )  # a folder store starts in a second, SQLite's in ten
    data = scripted_loop.make_data(tmp_path / "data")
    base = scripted_loop.make_base(tmp_path / "base")
    run_dir = tmp_path / "run"
    pipeline.run(
        scripted_loop.config(data, base, "tracking.report_to=[tensorboard]"), run_dir, progress=False
    )
    tb = run_dir / "tracking" / "tensorboard"
    acc = _events(tb)
    for rnd in (1, 2):  # live, step by step, from the training loop's callback
        rows = [scripted_loop.train_row(s) for s in range(1, scripted_loop.STEPS + 1)]
        assert _curve(acc, f"train/round_{rnd}/loss") == [(r["step"], r["loss"]) for r in rows]
        assert _curve(acc, f"train/round_{rnd}/lr") == [(r["step"], r["lr"]) for r in rows]
    results = json.loads((run_dir / "results.json").read_text())
    acc_sub = [results["base"]["acc_substring"]] + [r["acc_substring"] for r in results["rounds"]]
    assert _curve(acc, "eval/acc_substring") == [(i, v) for i, v in enumerate(acc_sub)]
    table = _text(acc, "answers/round_2")
    assert table.startswith("| id | label | pred | correct_strict | answer | cited |")
    assert "blue crown; white wing bars" in table  # the concepts each answer cites

    # Resume with MLflow added: no stage is redone, TensorBoard gets nothing twice, MLflow catches up.
    mlflow_tracking = pytest.importorskip("mlflow.tracking")
    stamps = scripted_loop.manifests(run_dir)
    uri = (tmp_path / "mlruns").as_uri()
    two = scripted_loop.config(
        data, base, "tracking.report_to=[tensorboard,mlflow]", f"tracking.mlflow_uri={uri}"
    )
    for _ in range(2):  # the second resume must not log anything again either
        pipeline.run(two, run_dir, progress=False)
        newest = max(tb.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns)
        assert _events(newest).Tags()["scalars"] == [] and _events(newest).Tags()["tensors"] == []
    assert scripted_loop.manifests(run_dir) == stamps
    client = mlflow_tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("selfsynth").experiment_id])
    assert run.data.params["finetune.lr"] == str(two.finetune.lr) and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/round_2/loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(2.0 / s)) for s in (1, 2, 3)]
    evals = client.get_metric_history(run.info.run_id, "eval/acc_substring")
    assert sorted((m.step, m.value) for m in evals) == [(i, pytest.approx(v)) for i, v in enumerate(acc_sub)]
    path = client.download_artifacts(run.info.run_id, "answers/round_1.json", str(tmp_path / "dl"))
    assert json.loads(Path(path).read_text())["columns"][:3] == ["id", "label", "pred"]


def test_training_resumed_from_a_checkpoint_sends_the_earlier_steps_first(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    stage = Stage(run_dir, "round_1/finetune", "fp").begin()
    # As after a resume from the step-2 checkpoint: the log holds steps 1-2, training goes on at 3.
    rows = [scripted_loop.train_row(s) for s in (1, 2, 3)]
    (stage.dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tracker = open_run_tracker(_cfg(run_dir, "tensorboard"), run_dir)
    tracker.train_logger(1)(rows[2])
    tracker.close()
    acc = _events(run_dir / "tracking" / "tensorboard")
    assert [s for s, _ in _curve(acc, "train/round_1/loss")] == [1, 2, 3]
    # A process that had already started this training sends only its own steps.
    tracker = open_run_tracker(_cfg(run_dir, "tensorboard"), run_dir)
    tracker.train_logger(1)(scripted_loop.train_row(4))
    tracker.close()
    newest = max((run_dir / "tracking" / "tensorboard").glob("events*"), key=lambda p: p.stat().st_mtime_ns)
    assert [s for s, _ in _curve(_events(newest), "train/round_1/loss")] == [4]


def test_the_real_training_loop_reports_every_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tiny_models import make_images, tiny_finetune_config, tiny_model

    from selfsynth.models.vlm import VLM
    from selfsynth.records import QA

    images = make_images(tmp_path / "images", 2)
    examples = [QA(str(i), str(images[i % 2]), "what bird is this ?", "a red finch", "x") for i in range(4)]
    cfg = tiny_finetune_config(lora_dropout=0.05, batch_size=2, micro_batch_size=2, warmup_ratio=0.5)
    run_dir = tmp_path / "run"
    stage = Stage(run_dir, "round_1/finetune", "fp").begin()
    tracker = open_run_tracker(_cfg(run_dir, "tensorboard"), run_dir)
    vlm = VLM.load(tiny_model("llava", tmp_path / "model"))
    vlm.train_lora(examples, cfg, stage.dir, progress=False, on_step=tracker.train_logger(1))
    tracker.close()
    logged = [json.loads(x) for x in (stage.dir / "train_log.jsonl").read_text().splitlines()]
    acc = _events(run_dir / "tracking" / "tensorboard")
    assert len(logged) == 2
    assert _curve(acc, "train/round_1/loss") == [(r["step"], r["loss"]) for r in logged]
    assert _curve(acc, "train/round_1/lr") == [(r["step"], r["lr"]) for r in logged]


def _wandb_records(path: Path) -> list[dict]:
    """History rows of a ``.wandb`` file: W&B's record log (7-byte header, 32 KiB blocks of
    CRC/length/type-framed protobuf ``Record`` messages), decoded with W&B's own protobuf."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, out, pending, pos, block = path.read_bytes(), [], b"", 7, 32768
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            if rec.WhichOneof("record_type") == "history":
                out.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                )
    return out


def test_wandb_offline_run_is_written_and_continued_on_resume(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "first"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    tracker = open_run_tracker(_cfg(run_dir, "wandb"), run_dir)
    _round(run_dir, tracker, 1)
    tracker.close()
    # A resumed run; its own WANDB_DIR, since run folders are named by the second they start in.
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "second"))
    tracker = open_run_tracker(_cfg(run_dir, "wandb"), run_dir)
    _round(run_dir, tracker, 1)  # already sent: nothing again
    _round(run_dir, tracker, 2)
    tracker.close()
    wandb.teardown()  # the W&B service finishes writing a run's file as it shuts down
    run_id = json.loads((run_dir / "tracking" / "state.json").read_text())["ids"]["wandb"]
    folders = [next((tmp_path / d / "wandb").glob(f"offline-run-*-{run_id}")) for d in ("first", "second")]
    first = _wandb_records(folders[0] / f"run-{run_id}.wandb")
    losses = [(r["train/round_1/step"], r["train/round_1/loss"]) for r in first if "train/round_1/loss" in r]
    assert losses == [(s, pytest.approx(2.0 / s)) for s in (1, 2, 3)]
    assert [r["eval/acc_strict"] for r in first if "eval/acc_strict" in r] == [0.25]
    second = _wandb_records(folders[1] / f"run-{run_id}.wandb")
    assert [r["eval/round"] for r in second if "eval/acc_strict" in r] == [2]  # round 1 not sent twice
    assert not any("train/round_1/loss" in r for r in second) and any(
        "train/round_2/loss" in r for r in second
    )
    (table,) = (folders[0] / "files" / "media" / "table" / "answers").glob("round_1*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"][:3] == ["id", "label", "pred"] and content["data"][0][0] == "t0"


def test_mlflow_file_store(tmp_path, monkeypatch):
    mlflow_tracking = pytest.importorskip("mlflow.tracking")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks before using a folder store
    uri = (tmp_path / "mlruns").as_uri()
    run_dir = tmp_path / "run"
    tracker = open_run_tracker(_cfg(run_dir, "mlflow", mlflow_uri=uri, project="birds"), run_dir)
    _round(run_dir, tracker, 1)
    tracker.close()
    client = mlflow_tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("birds").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/round_1/lr")] == [1, 2, 3]
    assert run.data.metrics["eval/acc_strict"] == 0.25 and run.data.params["tracking.project"] == "birds"
    assert "answers/round_1.json" in [f.path for f in client.list_artifacts(run.info.run_id, "answers")]


@pytest.mark.slow
def test_mlflow_default_store_is_a_sqlite_file_in_the_run(tmp_path, monkeypatch):
    mlflow_tracking = pytest.importorskip("mlflow.tracking")
    pytest.importorskip("sqlalchemy")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    tracker = open_run_tracker(_cfg(run_dir, "mlflow"), run_dir)
    _round(run_dir, tracker, 1)
    tracker.close()
    client = mlflow_tracking.MlflowClient(f"sqlite:///{run_dir / 'tracking' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("selfsynth").experiment_id])
    assert [m.value for m in client.get_metric_history(run.info.run_id, "eval/acc_substring")] == [0.5]
    assert (run_dir / "tracking" / "mlflow-artifacts").is_dir()


def test_trackio_local_project_continued_on_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is imported
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    run_dir = tmp_path / "run"
    tracker = open_run_tracker(_cfg(run_dir, "trackio", project="birds"), run_dir)
    _round(run_dir, tracker, 1)
    tracker.close()
    tracker = open_run_tracker(_cfg(run_dir, "trackio", project="birds"), run_dir)  # a resumed run
    _round(run_dir, tracker, 1)
    _round(run_dir, tracker, 2)
    tracker.close()
    name = json.loads((run_dir / "tracking" / "state.json").read_text())["ids"]["trackio"]
    logs = SQLiteStorage.get_logs(project="birds", run=name)
    for rnd in (1, 2):
        losses = [(r["step"], r[f"train/round_{rnd}/loss"]) for r in logs if f"train/round_{rnd}/loss" in r]
        assert losses == [(s, pytest.approx(2.0 / s)) for s in (1, 2, 3)]  # each step once
    (table,) = [r["answers/round_1"] for r in logs if "answers/round_1" in r]
    assert "blue crown; white wing bars" in str(table)


class _Broken:
    name = "broken"

    def log_metrics(self, values, *, step, axis):
        raise RuntimeError("the tracking server went away")

    def log_table(self, *args, **kwargs):
        raise RuntimeError("the tracking server went away")

    def close(self, failed=False):
        pass


def test_a_failing_backend_is_dropped_and_the_run_goes_on(tmp_path, caplog):
    tracker = RunTracker(tmp_path / "run", [_Broken()])
    _round(tmp_path / "run", tracker, 1)
    assert not tracker.active and "the tracking server went away" in caplog.text


def test_only_the_main_rank_tracks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed, "from_main", lambda value: value)  # rank 0 had no problem
    tracker = open_run_tracker(_cfg(tmp_path, "tensorboard"), tmp_path / "run")
    assert not tracker.active and tracker.train_logger(1) is None
    assert not (tmp_path / "run" / "tracking").exists()
    monkeypatch.setattr(distributed, "from_main", lambda value: "W&B could not start a run")  # rank 0 failed
    with pytest.raises(SelfsynthError, match="could not start"):
        open_run_tracker(_cfg(tmp_path, "tensorboard"), tmp_path / "run")


def test_answer_tables_escape_cells_and_spread_over_the_rows():
    from selfsynth.tracking.base import markdown_table
    from selfsynth.tracking.run_tracker import answer_table

    assert markdown_table(["answer"], [["a | b\nc"]]).splitlines()[2] == "| a \\| b c |"
    rows = [{"id": f"t{i:02d}", "label": "x", "answer": "y", "cited": ["p", "q"]} for i in range(10)]
    columns, table = answer_table(rows, 4)
    assert columns == ["id", "label", "answer", "cited"]
    assert [r[0] for r in table] == ["t00", "t02", "t05", "t07"] and table[0][3] == "p; q"
