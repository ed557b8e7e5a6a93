"""cpu_precision=auto: chosen by measuring on the machine, cached per machine."""

from __future__ import annotations

import json

import pytest
import torch

from selfsynth.models import devices, precision_probe


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSYNTH_CACHE", str(tmp_path))
    monkeypatch.setattr(precision_probe, "_memo", {})
    monkeypatch.setattr(precision_probe, "_bf16_possible", lambda: True)


def _fake_measure(calls, fp32, bf16):
    def measure(workload):
        calls.append(workload)
        return {"fp32_s": fp32, "bf16_s": bf16, "choice": "bf16" if fp32 / bf16 >= 1.1 else "fp32"}

    return measure


def test_slower_bf16_gives_fp32_even_where_the_cpu_has_bf16_instructions(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(precision_probe, "measure", _fake_measure(calls, 0.5, 0.7))
    assert devices.cpu_bf16("auto", "train") is False
    assert calls == ["train"]


def test_the_choice_is_cached_per_machine_and_workload(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(precision_probe, "measure", _fake_measure(calls, 0.5, 0.2))
    assert devices.cpu_bf16("auto", "train") is True
    assert devices.cpu_bf16("auto", "encode") is True
    table = json.loads((tmp_path / "cpu-precision.json").read_text())
    entry = table[precision_probe.machine_key()]
    assert set(entry) == {"train", "encode"} and entry["train"]["choice"] == "bf16"
    # a new process (empty memo) reads the file instead of measuring again
    monkeypatch.setattr(precision_probe, "_memo", {})
    assert devices.cpu_bf16("auto", "train") is True
    assert calls == ["train", "encode"]
    # another thread count is another machine for this purpose
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if old != 1 else 2)
        assert devices.cpu_bf16("auto", "train") is True
    finally:
        torch.set_num_threads(old)
    assert calls == ["train", "encode", "train"]
    # so is a cap on oneDNN's kernels (AVX512_CORE_BF16 turns AMX off)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert "onednn<=AVX512_CORE_BF16" in precision_probe.machine_key()
    assert devices.cpu_bf16("auto", "train") is True
    assert calls == ["train", "encode", "train", "train"]


def test_a_corrupt_cache_is_measured_again(monkeypatch, tmp_path):
    (tmp_path / "cpu-precision.json").write_text("{not json")
    calls: list[str] = []
    monkeypatch.setattr(precision_probe, "measure", _fake_measure(calls, 0.5, 0.7))
    assert precision_probe.measured_choice("encode") == "fp32"
    assert calls == ["encode"]
    assert json.loads((tmp_path / "cpu-precision.json").read_text())


def test_no_bf16_support_means_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(precision_probe, "_bf16_possible", lambda: False)
    monkeypatch.setattr(precision_probe, "measure", lambda w: pytest.fail("measured"))
    assert devices.cpu_bf16("auto") is False


@pytest.mark.parametrize("workload", ["encode", "embed"])
def test_the_real_measurement_returns_times_and_a_consistent_choice(workload):
    result = precision_probe.measure(workload)
    assert result["fp32_s"] > 0 and result["bf16_s"] > 0
    speedup = result["fp32_s"] / result["bf16_s"]
    assert result["choice"] == ("bf16" if speedup >= precision_probe.MIN_SPEEDUP else "fp32")
    with pytest.raises(ValueError, match="workload"):
        precision_probe.measure("decode")


def test_measuring_leaves_the_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    precision_probe.measure("encode")
    assert torch.equal(torch.rand(4), expected)


def test_a_run_keeps_the_precisions_it_started_with(monkeypatch, tmp_path):
    from selfsynth.config import load_config
    from selfsynth.errors import ConfigError
    from selfsynth.pipeline import PRECISION_FILE, pin_cpu_precisions

    def on_cpu(*overrides: str):
        return load_config(overrides=["model.device=cpu", *overrides], require=())

    calls: list[str] = []
    monkeypatch.setattr(precision_probe, "measure", _fake_measure(calls, 0.5, 0.2))
    run = tmp_path / "run"
    cfg = pin_cpu_precisions(on_cpu(), run)
    assert (cfg.finetune.cpu_precision, cfg.model.encode_precision, cfg.embed.precision) == ("bf16",) * 3
    # the machine's measurement changes (cleared cache, other threads): the run resumes as it began
    monkeypatch.setattr(precision_probe, "_memo", {})
    (tmp_path / "cpu-precision.json").unlink()
    monkeypatch.setattr(precision_probe, "measure", _fake_measure(calls, 0.5, 0.7))
    again = pin_cpu_precisions(on_cpu(), run)
    assert again.embed.precision == "bf16" and again.finetune.cpu_precision == "bf16"
    assert pin_cpu_precisions(on_cpu(), tmp_path / "other").embed.precision == "fp32"
    # a setting given explicitly is left as given
    forced = on_cpu("embed.precision=fp32")
    assert pin_cpu_precisions(forced, tmp_path / "third").embed.precision == "fp32"
    (run / PRECISION_FILE).write_text('{"embed.precision": "fp16"}')
    with pytest.raises(ConfigError, match=PRECISION_FILE):
        pin_cpu_precisions(on_cpu(), run)
