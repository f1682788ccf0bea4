"""The default policy's cache: location, first-use build, atomic replacement, and (slow) the real build."""

from __future__ import annotations

import json

import pytest

import brorl.sft
from brorl import default_policy as default_mod
from brorl.default_policy import default_policy_path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRORL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_run_sft(calls):
    """A stand-in for the 10-minute training: writes a marker file like a finished build would."""

    def fake(cfg, **kwargs):
        calls.append(cfg)
        brorl.sft._save(cfg, __import__("pathlib").Path(cfg.output), _Stub(), _Stub(), "card", [], {}, {})

    return fake


class _Stub:
    def save_pretrained(self, path, **kwargs):
        (path / "config.json").write_text(json.dumps({"stub": True}))


def test_cache_dir_follows_the_environment_variable(cache):
    assert default_mod.cache_dir() == cache


def test_missing_cache_without_build_says_how_to_build(cache):
    with pytest.raises(FileNotFoundError, match="brorl sft --default"):
        default_policy_path(build_if_missing=False)


def test_first_use_builds_from_the_preset_and_later_uses_hit_the_cache(cache, monkeypatch):
    calls = []
    monkeypatch.setattr(brorl.sft, "run_sft", _fake_run_sft(calls))
    path = default_policy_path()
    assert path == cache / "default-policy" and (path / "brorl_sft.json").exists()
    assert default_policy_path() == path
    assert len(calls) == 1  # the second call did not rebuild
    cfg = calls[0]
    assert cfg.model is None and cfg.tasks == ["tiny-default"] and cfg.max_length <= 128


def test_a_crashed_rebuild_leaves_the_previous_build_intact(cache, monkeypatch):
    monkeypatch.setattr(brorl.sft, "run_sft", _fake_run_sft([]))
    path = default_policy_path()
    before = sorted(p.name for p in path.iterdir())

    def crash(cfg, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(brorl.sft, "run_sft", crash)
    with pytest.raises(RuntimeError):
        default_mod.build_default_policy()
    assert sorted(p.name for p in path.iterdir()) == before
    assert default_policy_path(build_if_missing=False) == path


def test_interrupted_save_leaves_no_half_written_directory(tmp_path):
    class Exploding:
        def save_pretrained(self, path, **kwargs):
            (path / "model.safetensors").write_text("partial")
            raise OSError("disk full")

    cfg = brorl.sft.SFTConfig(output=str(tmp_path / "out"))
    with pytest.raises(OSError, match="disk full"):
        brorl.sft._save(cfg, tmp_path / "out", Exploding(), _Stub(), "card", [], {}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_full_default_build_lands_in_the_target_band_and_round_trips(cache):
    """The real recipe (about 10 minutes): 15–60% mean pass@1, loadable by the Auto classes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = default_mod.build_default_policy(quiet=True)
    info = json.loads((path / "brorl_sft.json").read_text())
    scores = info["scores"]
    mean = sum(scores.values()) / len(scores)
    assert 0.15 <= mean <= 0.60, scores
    assert max(scores.values()) - min(scores.values()) > 0.3, "some tasks should be easy and some hard"
    assert info["facts"]["parameters"] < 10_000_000
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama" and tok.eos_token_id is not None
    assert "| **mean** |" in (path / "README.md").read_text()
