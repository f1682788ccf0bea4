"""Evaluation runs: held-out problem selection and the sample → score → record reduction on the tiny model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from brorl.data import reasoning_gym_problems, split_of
from brorl.eval.runner import evaluate_problems, heldout_problems, instance_record, resolve_tasks


@dataclass
class _Scored:
    correct: list[bool]
    answers: list[str | None]


class RuleScorer:
    """A test scorer with a known rule: a completion is correct iff it contains the digit '7'; its "answer" is
    its first character. (The real scoring pool lives in brorl.rewards; this checks the bookkeeping.)"""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def score(self, problems, completions, n, finish_reasons):
        assert len(completions) == len(problems) * n == len(finish_reasons)
        self.calls.append((len(problems), n))
        return _Scored([("7" in c) for c in completions], [c[:1] or None for c in completions])


def test_heldout_problems_are_distinct_heldout_questions_in_a_size_independent_order():
    specs = resolve_tasks(["arithmetic-easy"])
    small, large = heldout_problems(specs, 5, seed=3), heldout_problems(specs, 12, seed=3)
    for task in ("basic_arithmetic", "chain_sum"):
        s = [p.uid for p in small if p.source == task]
        big = [p.uid for p in large if p.source == task]
        assert len(s) == 5 and big[:5] == s  # asking for more instances only appends
    questions = [(p.source, p.question) for p in large]
    assert len(set(questions)) == len(questions)
    assert all(split_of(p.source, p.question) == "heldout" for p in large)
    train = {p.question for p in reasoning_gym_problems(specs, size=400, split="train", seed=3)}
    assert not train & {p.question for p in large}


def test_heldout_problems_caps_tasks_with_few_distinct_questions():
    # count_bits up to 63 has 63 questions, about a fifth of them held out
    (spec,) = [s for s in resolve_tasks(["tiny-default"]) if s.name == "count_bits"]
    got = heldout_problems([spec], 50, seed=0)
    assert 3 <= len(got) < 30 and len({p.question for p in got}) == len(got)


@pytest.mark.parametrize(
    ("names", "match"),
    [(["no_such_task"], "unknown task or mixture"), (["gcd", "tiny-default"], "more than once")],
)
def test_resolve_tasks_rejects_unknown_and_repeated_names(names, match):
    with pytest.raises(ValueError, match=match):
        resolve_tasks(names)


def test_instance_record_counts_correct_and_distinct_answers():
    (p,) = heldout_problems(resolve_tasks(["gcd"]), 1, seed=0)
    rec = instance_record(p, [True, False, True, False], ["3", "5", "3", None])
    assert (rec.samples, rec.correct, rec.distinct_answers) == (4, 2, 2)
    assert rec.top_answers == [["3", 2], ["5", 1]]
    assert (rec.task, rec.category, rec.uid) == ("gcd", "arithmetic", p.uid)


def test_evaluate_problems_reduces_groups_and_does_not_depend_on_prompts_per_call(tiny_model, tiny_tokenizer):
    from brorl.rollout.engine import HFRolloutEngine
    from brorl.rollout.types import SamplingParams

    problems = heldout_problems(resolve_tasks(["arithmetic-easy"]), 3, seed=0)  # 6 problems
    prompts = [f"Q: {p.question} A:" for p in problems]
    engine = HFRolloutEngine(tiny_model, tiny_tokenizer)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=5)
    scorer = RuleScorer()
    done: list[int] = []
    recs = evaluate_problems(
        problems, prompts, engine, scorer, 4, params, prompts_per_call=4, on_progress=done.append
    )
    assert scorer.calls == [(4, 4), (2, 4)] and done == [4, 2]
    # the reduction against the raw samples: regenerate everything in one call and count per group by hand
    batch = engine.generate(prompts, 4, params, prompt_keys=list(range(6)))
    hits = np.array(["7" in t for t in batch.response_text]).reshape(6, 4)
    assert [r.correct for r in recs] == hits.sum(1).tolist()
    assert [r.uid for r in recs] == [p.uid for p in problems]
    again = evaluate_problems(problems, prompts, engine, RuleScorer(), 4, params, prompts_per_call=1)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in recs]


def test_evaluate_problems_rejects_mismatched_prompts():
    with pytest.raises(ValueError, match="as many prompts as problems"):
        evaluate_problems([object()], [], None, None, 4, None)


class ScriptedBackend:
    """A backend double whose responses are known: sample s of problem b is the gold answer in <answer> tags
    when s < correct_per_problem[b], else a wrong one. (The real engine is exercised in the test above.)"""

    def __init__(self, problems, correct_per_problem):
        self.problems, self.correct = problems, correct_per_problem

    def generate(self, prompts, n, params, *, prompt_keys):
        texts = []
        for key in prompt_keys:
            gold = self.problems[key].answer
            texts += [f"so <answer>{gold if s < self.correct[key] else 'zebra'}</answer>" for s in range(n)]
        return _Batch(texts, ["stop"] * len(texts))


@dataclass
class _Batch:
    response_text: list[str]
    finish_reason: list[str]


def test_real_reward_pool_scores_gold_answers_of_heldout_problems_as_correct():
    from brorl.rewards import RewardPool

    problems = heldout_problems(resolve_tasks(["tiny-default"]), 2, seed=1)  # 16 problems over 8 tasks
    wanted = [i % 5 for i in range(len(problems))]  # 0..4 correct of 4 samples (4 → all correct)
    backend = ScriptedBackend(problems, wanted)
    with RewardPool(workers=0, answer_format="answer_tag") as pool:
        recs = evaluate_problems(
            problems, ["unused"] * len(problems), backend, pool, 4, None, prompts_per_call=5
        )
    assert [r.correct for r in recs] == wanted
    assert all(r.distinct_answers == (1 if w in (0, 4) else 2) for r, w in zip(recs, wanted, strict=True))
    assert {r.task for r in recs} == {s.name for s in resolve_tasks(["tiny-default"])}
