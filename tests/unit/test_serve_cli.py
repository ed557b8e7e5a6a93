"""``selfsynth serve``: flags, defaults (localhost), model naming, concept discovery; uvicorn is stubbed."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from selfsynth.cli import build_parser, main
from selfsynth.commands import serve as serve_cmd


class Echo:
    def generate(self, images, prompts, **kw):
        return [[f"echo {p}"] for p in prompts]

    def chat(self, image, messages, **kw):
        return "echo " + messages[-1]["content"]


@pytest.fixture
def captured(monkeypatch):
    seen = {}

    def fake_run(app, **kw):
        seen["app"], seen["kw"] = app, kw

    monkeypatch.setattr("uvicorn.run", fake_run)
    return seen


def test_defaults_bind_localhost_and_pass_limits(tmp_path, captured, capsys):
    model = tmp_path / "runs" / "birds" / "round_3" / "finetune" / "merged"
    model.mkdir(parents=True)
    (tmp_path / "runs" / "birds" / "concepts").mkdir()
    (tmp_path / "runs" / "birds" / "concepts" / "concepts.json").write_text(
        json.dumps({"Finch": ["red crown"]})
    )
    args = build_parser().parse_args(["serve", str(model), "--max-new-tokens", "16", "--max-body-mb", "0.5"])
    assert serve_cmd.run(args, backend=Echo()) == 0
    assert captured["kw"]["host"] == "127.0.0.1" and captured["kw"]["port"] == 8000
    assert "birds-round_3" in capsys.readouterr().out
    app = captured["app"]
    assert app.state.limits.max_new_tokens == 16 and app.state.limits.max_body_bytes == 1 << 19
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "birds-round_3"
        assert client.get("/health").json()["concepts"] == 1
        page = client.get("/")
        assert page.status_code == 200 and "<script>" in page.text and "/v1/chat/completions" in page.text
        assert not re.search(
            r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(""", page.text
        )  # works offline
    with TestClient(app, base_url="http://rebound.example") as client:  # DNS rebinding
        assert client.get("/v1/models").status_code == 421


def test_model_name_forms(tmp_path):
    assert serve_cmd.model_name(tmp_path / "my-model") == "my-model"
    assert serve_cmd.model_name(tmp_path / "r" / "round_2" / "finetune" / "merged") == "r-round_2"
    assert serve_cmd.model_name(tmp_path / "demo" / "merged") == "demo-merged"


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-batch", "0"],
        ["--max-new-tokens", "0"],
        ["--port", "70000"],
        ["--max-body-mb", "0"],
        ["--max-queue", "0"],
        ["--request-timeout", "0"],
        ["--max-prompt-tokens", "0"],
    ],
)
def test_bad_flags_are_exit_2(tmp_path, captured, capsys, flags):
    assert main(["serve", str(tmp_path), *flags]) == 2
    assert "error" in capsys.readouterr().err and "app" not in captured


def test_missing_explicit_concepts_file_is_exit_2(tmp_path, captured, capsys):
    assert main(["serve", str(tmp_path), "--concepts", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_missing_model_is_exit_2(tmp_path, captured, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_api_key_from_the_environment_and_hosts_of_a_wildcard_bind(tmp_path, captured, monkeypatch):
    monkeypatch.setenv("SELFSYNTH_API_KEY", "env-key")
    args = build_parser().parse_args(["serve", str(tmp_path), "--host", "0.0.0.0", "--max-queue", "3"])
    assert serve_cmd.run(args, backend=Echo()) == 0
    app = captured["app"]
    assert app.state.batcher.max_queue == 3
    with TestClient(app, base_url="http://anything.example") as client:  # 0.0.0.0: any Host
        assert client.get("/v1/models").status_code == 401
        ok = client.get("/v1/models", headers={"Authorization": "Bearer env-key"})
        assert ok.status_code == 200 and client.get("/health").status_code == 200
    args = build_parser().parse_args(
        ["serve", str(tmp_path), "--host", "0.0.0.0", "--allowed-hosts", "box.lan", "--api-key", "flag-key"]
    )
    assert serve_cmd.run(args, backend=Echo()) == 0  # the flag wins over the environment
    with TestClient(captured["app"], base_url="http://box.lan:8000") as client:
        assert client.get("/v1/models", headers={"Authorization": "Bearer flag-key"}).status_code == 200
    with TestClient(captured["app"], base_url="http://other.lan") as client:
        assert client.get("/v1/models", headers={"Authorization": "Bearer flag-key"}).status_code == 421
