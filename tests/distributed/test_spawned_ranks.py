"""Paths the CLI run cannot reach, on two real ranks started with torch.multiprocessing (gloo on 127.0.0.1).

- held-out evaluation sharded across ranks gives the one-process metrics;
- a short batch (3 groups on 2 ranks, 2 mini-batches) leaves rank 1 with nothing in the second mini-batch: it
  must still take part in the gradient sum, and the update must equal the one-process update.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.multiprocessing as mp
from digit_task import digit_config
from ranks import free_port, join_as_rank

from brorl.trainer import Trainer
from brorl.trainer.loop import CollectStats


def _config(digit: Path, out: Path):
    return digit_config(digit, out, prompts_per_step=2, mini_batches=2, eval_samples=32)


def _with_eval_set(trainer: Trainer) -> Trainer:
    from brorl.data import format_prompt

    cfg = trainer.cfg
    trainer.c.eval_problems = trainer.c.train_problems[:7]  # 7 instances: 4 on rank 0, 3 on rank 1
    trainer.c.eval_prompts = [
        format_prompt(p, trainer.tokenizer, template=cfg.template, answer_format=cfg.answer_format)
        for p in trainer.c.eval_problems
    ]
    return trainer


def _short_batch_update(trainer: Trainer, *, shared: bool) -> dict[str, torch.Tensor]:
    """Score 3 prompts (every rank the same ones), train on this rank's share; return the new parameters."""
    from brorl.distributed import batch_plan

    groups = trainer.score(trainer.stream.take(3), CollectStats())
    mine = groups
    if shared:  # this rank's part: rank 0 gets groups 0 and 2, rank 1 group 1 only
        plan = batch_plan(3, 2, trainer.dist.world_size)
        mine = [groups[i] for mini in plan for i in mini[trainer.dist.rank]]
    adv, _ = trainer.advantage(mine)
    trainer.update(mine, adv, batch_size=3)
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def _worker(rank: int, world: int, port: int, digit: str, out: str) -> None:
    dist = join_as_rank(rank, world, port)
    trainer = _with_eval_set(Trainer(_config(Path(digit), Path(out)), dist=dist))
    metrics = trainer.evaluate()
    params = _short_batch_update(trainer, shared=True)
    if rank == 0:
        (Path(out) / "eval.json").write_text(json.dumps(metrics))
        torch.save(params, Path(out) / "params.pt")
    trainer.close()
    dist.close()


def test_sharded_evaluation_and_a_short_batch_match_one_process(digit, tmp_path):
    out = tmp_path / "two"
    out.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(digit), str(out)), nprocs=2, join=True)
    single = _with_eval_set(Trainer(_config(digit, tmp_path / "one")))
    expected = single.evaluate()
    params = _short_batch_update(single, shared=False)
    single.close()
    got = json.loads((out / "eval.json").read_text())
    assert expected["eval/pass@1"] > 0 and got.keys() == expected.keys()
    for k, v in expected.items():
        if not k.startswith("perf/"):
            assert got[k] == v, k
    two = torch.load(out / "params.pt")
    for k, v in params.items():
        torch.testing.assert_close(two[k], v, atol=1e-6, rtol=1e-5, msg=k)
