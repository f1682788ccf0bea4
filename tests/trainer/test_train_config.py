"""Training presets load, say what they claim, and invalid combinations are refused with a reason."""

from __future__ import annotations

import math

import pytest

from brorl.config import ConfigError, build, load_preset
from brorl.trainer import TrainConfig

PRESETS = ["tiny-cpu", "prorl-cpu", "brorl-paper", "prorl-paper"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds(name):
    cfg = build(TrainConfig, load_preset(name, section="train"), origin="preset")
    assert cfg.rollouts in (16, 512)


def test_tiny_cpu_preset_is_the_default():
    assert build(TrainConfig, load_preset("tiny-cpu", section="train")) == TrainConfig()


def test_square_root_rule_between_the_paper_arms():
    brorl = build(TrainConfig, load_preset("brorl-paper", section="train"))
    prorl = build(TrainConfig, load_preset("prorl-paper", section="train"))
    assert brorl.effective_lr == pytest.approx(prorl.effective_lr * math.sqrt(8))  # BroRL §4: ×√8 ≈ 2.83
    assert brorl.mini_batches == prorl.mini_batches  # "the same mini-batches per step"
    cpu_b = build(TrainConfig, load_preset("tiny-cpu", section="train"))
    cpu_p = build(TrainConfig, load_preset("prorl-cpu", section="train"))
    assert cpu_b.effective_lr == pytest.approx(cpu_p.effective_lr * math.sqrt(8))
    assert cpu_b.rollouts * cpu_b.prompts_per_step == 8 * cpu_p.rollouts * cpu_p.prompts_per_step


def test_old_logprobs_reuse_follows_truncation():
    assert TrainConfig().reuse_rollout_logprobs
    assert not TrainConfig(top_p=0.9).reuse_rollout_logprobs
    assert not TrainConfig(old_logprobs="recompute").reuse_rollout_logprobs


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(rollouts=1), "group estimator"),
        (dict(prompts_per_step=6, mini_batches=4), "divisible"),
        (dict(temperature=0.0), "temperature"),
        (dict(dual_clip=0.5), "dual-clip"),
        (dict(kl_coef=-1.0), "kl-coef"),
        (dict(eps_low=1.5), "eps-low"),
        (dict(adam_eps=0.0), "adam-eps"),
        (dict(adam_beta2=1.0), "adam-beta2"),
    ],
)
def test_invalid_settings_say_what_to_change(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**kwargs)
