"""``--sharding fsdp`` (FSDP2) on two real CPU ranks (gloo) trains like one process without it.

- ``torchrun``: 2 FSDP steps, a resume of that checkpoint in one process without FSDP, a resume of the unsharded
  checkpoint on 2 FSDP ranks; every step's weights, reference, optimizer state and metrics equal the one-process
  run's. Three groups per mini-batch split 2/1 across ranks, micro-batches of 5 rows, recomputed old log-probs,
  a KL reference with a reset, refill rounds of odd size and surplus groups: ranks run different numbers of passes,
  which FSDP's implicit per-layer collectives could not survive.
- The FSDP checkpoint loads with ``from_pretrained``.
- Spawned ranks: sharded evaluation with unequal shares (17 / 16 instances, so different numbers of generation
  calls) and a short batch in which rank 1 has nothing to train on in the second mini-batch.
- Errors: FSDP in one process; models it cannot wrap; a forward outside a gathered phase.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from digit_task import digit_config
from ranks import free_port, join_as_rank
from safetensors.torch import load_file
from test_two_ranks import _argv as two_ranks_argv
from test_two_ranks import _metrics, _torchrun, _weights

from brorl.cli import main
from brorl.config import ConfigError
from brorl.sharding import decoder_layers, gathered, shard_model
from brorl.trainer import Trainer
from brorl.trainer.loop import CollectStats


def _argv(digit: Path, out: Path, *extra: str) -> list[str]:
    """test_two_ranks' run, with work that differs between ranks (flags given later override earlier ones)."""
    return two_ranks_argv(
        digit,
        out,
        *("--prompts-per-step", "6"),  # 2 mini-batches of 3 groups: ranks train on 2 and 1
        *("--micro-batch-tokens", "5"),  # 4 micro-batches per group
        *("--old-logprobs", "recompute"),  # one more gathered phase
        *extra,
    )


@pytest.fixture(scope="module")
def runs(digit, tmp_path_factory) -> tuple[Path, Path]:
    """One process without FSDP for 4 steps; FSDP 2 steps → one process without FSDP → FSDP, 4 steps in all."""
    root = tmp_path_factory.mktemp("fsdp")
    one, two = root / "one", root / "two"
    assert main(_argv(digit, one, "--steps", "4")) == 0
    proc = _torchrun(_argv(digit, two, "--steps", "2", "--sharding", "fsdp"))
    assert "sharded over 2 ranks" in proc.stdout  # FSDP really was on
    resume = ["train", "--resume", str(two), "--no-progress"]
    assert main([*resume, "--steps", "3", "--sharding", "none"]) == 0  # an FSDP checkpoint, without FSDP
    proc = _torchrun([*resume, "--steps", "4", "--sharding", "fsdp"])  # an unsharded checkpoint, with FSDP
    assert "sharded over 2 ranks" in proc.stdout
    return one, two


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=f"{what}: {k}")


def test_fsdp_on_two_ranks_matches_one_process_and_resumes_with_or_without_it(runs):
    one, two = runs
    for step in (1, 2, 3, 4):  # 1, 2 and 4 written by FSDP ranks, 3 by one process
        _close(_weights(one, step), _weights(two, step), f"policy, step {step}")
        ckpt = f"checkpoints/step_{step:06d}/"
        _close(
            load_file(str(one / ckpt / "reference.safetensors")),
            load_file(str(two / ckpt / "reference.safetensors")),
            f"reference, step {step}",
        )
        oa, ob = (
            torch.load(r / ckpt / "trainer_state.pt", weights_only=False)["optimizer"] for r in (one, two)
        )
        assert oa["param_groups"] == ob["param_groups"]  # the same format: index keys, tuples
        assert oa["state"].keys() == ob["state"].keys()
        for i in oa["state"]:
            _close(oa["state"][i], ob["state"][i], f"optimizer state {i}, step {step}")
    ma, mb = _metrics(one), _metrics(two)
    assert [m["step"] for m in mb] == [1, 2, 3, 4]
    for ra, rb in zip(ma, mb, strict=True):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), (ra["step"], k)
    # refills, surplus, odd rounds, and a reference reset (step 3) happened
    assert any(m["filter/rounds"] > 1 for m in ma) and any(m["filter/from_surplus"] > 0 for m in ma)
    assert any(m["filter/groups_generated"] % 2 for m in ma) and ma[2]["policy/ref_reset"] == 1
    assert not list((two / "checkpoints").glob(".tmp-*"))


def test_an_fsdp_checkpoint_loads_with_transformers(runs):
    from transformers import AutoModelForCausalLM

    one, two = runs
    models = [
        AutoModelForCausalLM.from_pretrained(r / "checkpoints" / "step_000004" / "policy") for r in (one, two)
    ]
    a, b = (dict(m.named_parameters()) for m in models)
    _close(a, b, "from_pretrained")
    assert models[1].lm_head.weight is models[1].model.embed_tokens.weight  # still tied
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(models[1](ids).logits, models[0](ids).logits, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- spawned ranks: evaluation and a short batch
def _config(digit: Path, out: Path, **extra):
    return digit_config(
        digit, out, prompts_per_step=2, mini_batches=2, eval_samples=8, micro_batch_tokens=5, **extra
    )


def _with_eval_set(trainer: Trainer, n: int = 33) -> Trainer:
    """n held-out instances: 17 on rank 0, 16 on rank 1, i.e. 2 and 1 generation calls of 16 prompts."""
    from brorl.data import format_prompt

    cfg = trainer.cfg
    trainer.c.eval_problems = trainer.c.train_problems[:n]
    trainer.c.eval_prompts = [
        format_prompt(p, trainer.tokenizer, template=cfg.template, answer_format=cfg.answer_format)
        for p in trainer.c.eval_problems
    ]
    return trainer


def _short_batch_update(trainer: Trainer) -> dict[str, torch.Tensor]:
    """3 groups, 2 mini-batches: rank 0 trains on groups 0 and 2, rank 1 on group 1 only (nothing in the second)."""
    from brorl.distributed import batch_plan

    with gathered(trainer.model):  # every rank scores the same 3 prompts
        groups = trainer.score(trainer.stream.take(3), CollectStats())
    plan = batch_plan(3, 2, trainer.dist.world_size)
    mine = [groups[i] for mini in plan for i in mini[trainer.dist.rank]]
    adv, _ = trainer.advantage(mine)
    trainer.update(mine, adv, batch_size=3)
    return {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in trainer.model.named_parameters()
    }


def _worker(rank: int, world: int, port: int, digit: str, out: str) -> None:
    dist = join_as_rank(rank, world, port)
    trainer = _with_eval_set(Trainer(_config(Path(digit), Path(out), sharding="fsdp"), dist=dist))
    metrics = trainer.evaluate()
    try:  # a forward outside a gathered phase would all-gather on one rank only: refused, before any collective
        trainer.model(input_ids=torch.zeros((1, 1), dtype=torch.long))
        refused = ""
    except RuntimeError as exc:
        refused = str(exc)
    params = _short_batch_update(trainer)
    if rank == 0:
        (Path(out) / "eval.json").write_text(json.dumps(metrics | {"refused": refused}))
        torch.save(params, Path(out) / "params.pt")
    trainer.close()
    dist.close()


def test_fsdp_sharded_evaluation_and_a_short_batch_match_one_process(digit, tmp_path):
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(digit), str(out)), nprocs=2, join=True)
    single = _with_eval_set(Trainer(_config(digit, tmp_path / "one")))
    expected = single.evaluate()
    params = _short_batch_update(single)
    single.close()
    got = json.loads((out / "eval.json").read_text())
    assert "outside brorl.sharding.gathered()" in got.pop("refused")
    assert expected["eval/pass@1"] > 0 and got.keys() == expected.keys()
    for k, v in expected.items():
        if not k.startswith("perf/"):
            assert got[k] == v, k
    two = torch.load(out / "params.pt")
    assert two.keys() == params.keys()
    for k, v in params.items():
        torch.testing.assert_close(two[k], v, atol=1e-6, rtol=1e-5, msg=k)


# ---------------------------------------------------------------- refusals
def test_fsdp_in_one_process_is_refused(digit, tmp_path, capsys):
    assert main(_argv(digit, tmp_path / "run", "--steps", "1", "--sharding", "fsdp")) == 2
    assert "needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def _llama(digit: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(digit / "model")


def test_models_fsdp_cannot_wrap_are_refused_with_the_reason(digit):
    assert len(decoder_layers(_llama(digit))) == 2  # the tiny Llama: one unit per decoder layer (+ the root)
    with pytest.raises(ConfigError, match="names no decoder layer class"):
        decoder_layers(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)))
    shared = _llama(digit)  # a parameter shared between a layer and the root cannot live in one unit
    shared.model.norm.weight = shared.model.layers[0].input_layernorm.weight
    with pytest.raises(ConfigError, match=r"shared with decoder layer model\.layers\.0"):
        decoder_layers(shared)
    mixed = _llama(digit)
    mixed.model.layers[1].mlp.half()
    with pytest.raises(ConfigError, match="mixes parameter dtypes"):
        decoder_layers(mixed)
    with pytest.raises(ConfigError, match="needs at least 2"):
        shard_model(_llama(digit), torch.device("cpu"), 1)
