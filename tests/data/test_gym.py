"""reasoning-gym source: splits never share a question, mixtures follow weights, same seed same problems."""

from __future__ import annotations

import pickle

import pytest

from brorl.data import (
    MIXTURES,
    Problem,
    TaskSpec,
    category_of,
    gym_dataset,
    gym_entry,
    reasoning_gym_problems,
    split_of,
    task_names,
)


@pytest.fixture(scope="module")
def tiny_splits() -> tuple[list[Problem], list[Problem]]:
    specs = MIXTURES["tiny-default"]
    return (
        reasoning_gym_problems(specs, size=2400, split="train", seed=0),
        reasoning_gym_problems(specs, size=400, split="heldout", seed=0),
    )


def test_tiny_default_has_eight_easy_tasks_from_brorl_md():
    names = [s.name for s in MIXTURES["tiny-default"]]
    assert names == [
        "basic_arithmetic",
        "chain_sum",
        "letter_counting",
        "gcd",
        "count_bits",
        "spell_backward",
        "lcm",
        "leg_counting",
    ]


def test_no_heldout_question_appears_in_train_for_default_mixture(tiny_splits):
    train, heldout = tiny_splits
    overlap = {p.question for p in train} & {p.question for p in heldout}
    assert overlap == set(), f"{len(overlap)} held-out questions leak into train, e.g. {sorted(overlap)[:3]}"
    # and each split only holds questions the split function assigns to it
    assert all(split_of(p.source, p.question) == "heldout" for p in heldout)
    assert all(split_of(p.source, p.question) == "train" for p in train)


def test_tiny_default_is_easy_and_short(tiny_splits):
    train, _ = tiny_splits
    by_task = {p.source: p for p in train}
    assert len(by_task) == 8
    # two one-digit terms: "Calculate 4 / 1." style
    assert all(len(p.question) < 60 for p in train if p.source == "basic_arithmetic")
    assert all(
        int(p.metadata["rg_entry"]["metadata"]["number"]) <= 63 for p in train if p.source == "count_bits"
    )
    assert all(3 <= len(p.answer) <= 4 for p in train if p.source == "spell_backward")
    # the longest question (leg_counting's preamble) still fits a 256-token context with room to answer
    assert max(len(p.question) for p in train) < 200


def test_mixture_counts_follow_weights_exactly():
    specs = [TaskSpec("gcd", weight=3.0), TaskSpec("lcm", weight=1.0)]
    problems = reasoning_gym_problems(specs, size=10, split="train", seed=1)
    counts = {s: sum(p.source == s for p in problems) for s in ("gcd", "lcm")}
    assert counts == {"gcd": 8, "lcm": 2}  # 7.5 / 2.5 -> largest remainder gives the tie to the first


def test_same_seed_same_problems_other_seed_other_problems():
    specs = MIXTURES["arithmetic-easy"]
    a = reasoning_gym_problems(specs, size=50, split="train", seed=7)
    b = reasoning_gym_problems(specs, size=50, split="train", seed=7)
    c = reasoning_gym_problems(specs, size=50, split="train", seed=8)
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in a] != [p.question for p in c]


def test_problem_k_does_not_depend_on_size():
    specs = [TaskSpec("gcd")]
    small = {p.uid: p.question for p in reasoning_gym_problems(specs, size=5, split="heldout", seed=3)}
    large = {p.uid: p.question for p in reasoning_gym_problems(specs, size=40, split="heldout", seed=3)}
    assert all(large[uid] == q for uid, q in small.items())


def test_uids_unique_even_with_repeated_task():
    specs = [TaskSpec("gcd", config={"max_value": 20}), TaskSpec("gcd", config={"max_value": 500})]
    problems = reasoning_gym_problems(specs, size=20, split="train", seed=0)
    assert len({p.uid for p in problems}) == 20
    assert {p.uid.split("/")[0] for p in problems} == {"gcd#0", "gcd#1"}


@pytest.mark.parametrize(
    ("task", "category"),
    [
        ("basic_arithmetic", "arithmetic"),  # reasoning_gym.arithmetic.basic_arithmetic
        ("letter_counting", "algorithmic"),  # reasoning_gym.algorithmic.letter_counting
        ("simple_equations", "algebra"),
        ("composite", "other"),  # lives at reasoning_gym.composite, outside any category package
    ],
)
def test_category_comes_from_module_layout(task, category):
    assert category_of(task) == category


def test_every_installed_task_has_a_category():
    assert len(task_names()) > 50
    assert all(category_of(name) for name in task_names())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: reasoning_gym_problems([TaskSpec("no_such_task")], size=1, split="train", seed=0),
            "known tasks",
        ),
        (
            lambda: reasoning_gym_problems(
                [TaskSpec("gcd", config={"max_vlue": 3})], size=1, split="train", seed=0
            ),
            "valid keys",
        ),
        (lambda: reasoning_gym_problems([TaskSpec("gcd")], size=1, split="test", seed=0), "split must be"),
        (lambda: reasoning_gym_problems([], size=1, split="train", seed=0), "specs is empty"),
        (lambda: TaskSpec("gcd", config={"seed": 1}), "remove ['seed']"),
        (lambda: TaskSpec("gcd", weight=0), "weight must be > 0"),
        (lambda: gym_dataset("gcd", {"min_value": 5, "max_value": 2}, seed=0), "invalid config"),
        # count_bits up to 2 has two distinct questions, and a 0.01% held-out share holds none of them:
        # a clear error rather than an endless loop
        (
            lambda: reasoning_gym_problems(
                [TaskSpec("count_bits", config={"max_n": 2})],
                size=5,
                split="heldout",
                seed=0,
                heldout_fraction=0.0001,
            ),
            "question space is too small",
        ),
    ],
)
def test_bad_input_gives_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_problems_pickle_and_entry_regenerates():
    problems = reasoning_gym_problems(MIXTURES["tiny-default"], size=16, split="heldout", seed=2)
    clone = pickle.loads(pickle.dumps(problems))
    assert clone == problems
    for p in clone:
        entry = gym_entry(p)
        assert entry["question"] == p.question and str(entry["answer"]) == p.answer
