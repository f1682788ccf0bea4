"""The launch environment and the pure sharding rules: half-set-up environments fail with a reason, shares add up."""

from __future__ import annotations

import pytest

from brorl.cli import main
from brorl.config import ConfigError
from brorl.distributed import LaunchEnv, batch_plan, combine_metrics, launch_env, shard

FULL = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_no_launch_variables_is_one_process():
    assert launch_env({}) == LaunchEnv()
    assert launch_env({"RANK": "0", "WORLD_SIZE": "1"}) == LaunchEnv()  # torchrun --nproc_per_node 1


def test_a_full_torchrun_environment_is_read():
    assert launch_env(FULL) == LaunchEnv(1, 2, 1, "127.0.0.1", 29500)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"MASTER_ADDR": None}, "MASTER_ADDR not set"),  # WORLD_SIZE set but no MASTER_ADDR
        ({"MASTER_PORT": None, "LOCAL_RANK": None}, "LOCAL_RANK, MASTER_PORT not set"),
        ({"RANK": None}, "RANK is not"),  # half a launch: the rank is missing
        ({"WORLD_SIZE": None}, "WORLD_SIZE is not"),
        ({"RANK": "2"}, "RANK=2 is outside 0..WORLD_SIZE-1"),  # RANK >= WORLD_SIZE
        ({"RANK": "-1"}, "outside"),
        ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE=0 must be >= 1"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"LOCAL_RANK": "3"}, "LOCAL_RANK=3 must be in 0..RANK"),
        ({"MASTER_PORT": "70000"}, "not a TCP port"),
    ],
)
def test_a_half_set_up_environment_is_a_clear_error(change, fragment):
    env = {k: v for k, v in (FULL | change).items() if v is not None}
    with pytest.raises(ConfigError, match=fragment):
        launch_env(env)


def test_train_refuses_a_half_set_up_environment_before_writing_anything(
    digit, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for name in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    argv = ["train", "--model", str(digit / "model"), "--tasks", str(digit / "tasks.jsonl")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "MASTER_ADDR, MASTER_PORT not set" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_prompts_per_step_must_divide_among_ranks(digit, tmp_path, monkeypatch, capsys):
    for k, v in (FULL | {"RANK": "0", "LOCAL_RANK": "0"}).items():
        monkeypatch.setenv(k, v)
    argv = ["train", "--model", str(digit / "model"), "--tasks", str(digit / "tasks.jsonl")]
    assert main([*argv, "--prompts-per-step", "3", "--out", str(tmp_path / "run")]) == 2
    assert "--prompts-per-step (3) must be divisible by the number of ranks (2)" in capsys.readouterr().err


@pytest.mark.parametrize("n", range(0, 9))
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_item_once_and_differ_by_at_most_one(n, world):
    parts = [shard(n, r, world) for r in range(world)]
    assert [i for p in parts for i in range(n)[p]] == list(range(n))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_batch_plan_keeps_the_one_process_mini_batches():
    # K = 5 groups, 2 mini-batches: one process trains [0, 1, 2] then [3, 4]; two ranks split each of them
    assert batch_plan(5, 2, 1) == [[range(0, 3)], [range(3, 5)]]
    assert batch_plan(5, 2, 2) == [[range(0, 2), range(2, 3)], [range(3, 4), range(4, 5)]]
    # a short batch of 1 group on 2 ranks: rank 1 has nothing to train on but still takes part
    assert batch_plan(1, 1, 2) == [[range(0, 1), range(1, 1)]]
    # K = 5, M = 4: ceil(5/4) = 2 per mini-batch gives 3 non-empty mini-batches, not 4 with an empty one
    assert [[list(r) for r in m] for m in batch_plan(5, 4, 1)] == [[[0, 1]], [[2, 3]], [[4]]]
    assert batch_plan(0, 2, 2) == []


def test_combine_metrics_sums_counters_takes_the_slowest_time_and_weights_means():
    a = {
        "rollout/num_samples": 32.0,
        "perf/rollout_seconds": 1.0,
        "reward/mean": 0.5,
        "perf/answers_per_second": 10.0,
    }
    b = {
        "rollout/num_samples": 16.0,
        "perf/rollout_seconds": 3.0,
        "reward/mean": 0.2,
        "perf/answers_per_second": 5.0,
    }
    out = combine_metrics([(a, 2.0), (b, 1.0)])
    assert out["rollout/num_samples"] == 48.0 and out["perf/rollout_seconds"] == 3.0
    assert out["perf/answers_per_second"] == 15.0
    assert out["reward/mean"] == pytest.approx((0.5 * 2 + 0.2) / 3)
    assert combine_metrics([({}, 0.0), (a, 2.0)])["reward/mean"] == 0.5  # a rank with no groups adds nothing
