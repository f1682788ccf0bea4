"""reasoning-gym as a task source: any dataset by name, weighted mixtures, and train / held-out splits that
never share a question.

How the splits are kept apart (two layers, the second is the guarantee):

1. Each (seed, split, task) gets its own reasoning-gym seed, derived with SHA-256, so the two splits draw
   from unrelated generator streams. (reasoning-gym seeds item ``i`` with ``Random(seed + i)``, so seeds that
   differ by a small offset such as ``seed`` and ``seed + 1`` would share almost every item.)
2. Easy tasks have tiny question spaces (``basic_arithmetic`` with two one-digit terms has a few hundred
   distinct questions), so independent draws still collide. Every *question text* is therefore assigned to one
   split by a hash: a question is held out iff ``sha256(task, question) mod 10^4 < heldout_fraction * 10^4``.
   Each split keeps only its own questions, so a held-out question can never appear in training, for any seed
   and any size, without either split having to know the other.

Categories come from reasoning-gym's module layout (``reasoning_gym.arithmetic.gcd`` → ``"arithmetic"``), as
reasoning-gym itself does, so new datasets get a category without a hand-written table.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Literal

import numpy as np

from brorl.data.problem import Problem, TaskSpec

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")
DEFAULT_HELDOUT_FRACTION = 0.2
_BUCKETS = 10_000

# The mixture the tiny CPU default is trained on (BRORL.md §9): eight tasks at easy settings, measured there
# to reach ~60% pass@1 with a ~4M-parameter model after 6 minutes (default difficulty reached only ~8%).
# Key names are the fields of each task's reasoning-gym *Config dataclass (reasoning-gym 0.1.x).
TINY_DEFAULT: list[TaskSpec] = [
    # "Calculate 4 / 1." — two one-digit terms, no parentheses or negation (short, no nesting)
    TaskSpec(
        "basic_arithmetic",
        config={
            "min_terms": 2,
            "max_terms": 2,
            "min_digits": 1,
            "max_digits": 1,
            "allow_parentheses": False,
            "allow_negation": False,
        },
    ),
    # "...: 4 - 1 =" — up to three one-digit terms
    TaskSpec("chain_sum", config={"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}),
    # 2–4 words of text to count a letter in
    TaskSpec("letter_counting", config={"min_words": 2, "max_words": 4}),
    # two numbers up to 30
    TaskSpec("gcd", config={"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 30}),
    # numbers up to 63 (six bits)
    TaskSpec("count_bits", config={"min_n": 1, "max_n": 63}),
    # 3–4 letter words
    TaskSpec("spell_backward", config={"min_word_len": 3, "max_word_len": 4}),
    # two numbers up to 12
    TaskSpec("lcm", config={"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 12}),
    # 1–2 kinds of animal; our choice: at most 3 of each (default 15) keeps the products one-step.
    # Its question text is the longest of the eight (~30 tokens of fixed preamble).
    TaskSpec(
        "leg_counting", config={"min_animals": 1, "max_animals": 2, "min_instances": 1, "max_instances": 3}
    ),
]

# Named mixtures (dispatch with a plain dict). "reasoning-gym-default" uses each task's default difficulty.
MIXTURES: dict[str, list[TaskSpec]] = {
    "tiny-default": TINY_DEFAULT,
    "tiny-default-hard": [TaskSpec(s.name) for s in TINY_DEFAULT],
    "arithmetic-easy": [s for s in TINY_DEFAULT if s.name in ("basic_arithmetic", "chain_sum")],
}


def _registry() -> dict[str, tuple[type, type]]:
    from reasoning_gym.factory import DATASETS

    return DATASETS


def task_names() -> list[str]:
    """All reasoning-gym dataset names installed (sorted)."""
    return sorted(_registry())


def category_of(task_name: str) -> str:
    """reasoning-gym category of a dataset, from its module path (``reasoning_gym.<category>.<module>``).

    Datasets outside a category package (``composite``) give ``"other"``, as reasoning-gym itself reports.
    """
    registry = _registry()
    if task_name not in registry:
        raise ValueError(f"unknown reasoning-gym task {task_name!r}; known tasks: {task_names()}")
    parts = registry[task_name][0].__module__.split(".")
    return parts[1] if len(parts) >= 3 else "other"


def categories() -> dict[str, list[str]]:
    """Category -> sorted task names, for per-category reporting."""
    out: dict[str, list[str]] = {}
    for name in task_names():
        out.setdefault(category_of(name), []).append(name)
    return out


def get_mixture(name: str) -> list[TaskSpec]:
    """A named mixture from :data:`MIXTURES`."""
    if name not in MIXTURES:
        raise ValueError(f"unknown mixture {name!r}; choose one of {sorted(MIXTURES)}")
    return list(MIXTURES[name])


def derive_seed(seed: int, split: str, task: str) -> int:
    """The reasoning-gym seed for one (seed, split, task): 31 bits of SHA-256, so streams are unrelated."""
    digest = hashlib.sha256(f"brorl/{seed}/{split}/{task}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFF_FFFF


def split_of(task: str, question: str, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> str:
    """Which split a question text belongs to (a pure function of the text: the split guarantee)."""
    digest = hashlib.sha256(f"{task}\n{question}".encode()).digest()
    return (
        "heldout"
        if int.from_bytes(digest[:4], "little") % _BUCKETS < heldout_fraction * _BUCKETS
        else "train"
    )


def _check_config(name: str, config: dict) -> None:
    config_cls = _registry()[name][1]
    valid = {f.name for f in dataclasses.fields(config_cls)} - {"seed", "size"}
    unknown = set(config) - valid
    if unknown:
        raise ValueError(f"task {name!r}: unknown config keys {sorted(unknown)}; valid keys: {sorted(valid)}")


@functools.lru_cache(maxsize=256)
def _cached_dataset(name: str, config_json: str, seed: int, size: int) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(name, seed=seed, size=size, **json.loads(config_json))


def gym_dataset(name: str, config: dict, seed: int, size: int = 1_000_000) -> Any:
    """A reasoning-gym dataset object (cached per process; datasets are read-only after construction)."""
    if name not in _registry():
        raise ValueError(f"unknown reasoning-gym task {name!r}; known tasks: {task_names()}")
    _check_config(name, config)
    try:
        return _cached_dataset(name, json.dumps(config, sort_keys=True), seed, size)
    except (AssertionError, TypeError) as exc:  # reasoning-gym validates configs with assert
        raise ValueError(f"task {name!r}: invalid config {config}: {exc}") from exc


def json_safe(value: Any) -> Any:
    """Convert to JSON types (tuples → lists, sets → sorted lists, other objects → str)."""
    return json.loads(
        json.dumps(value, default=lambda o: sorted(o, key=str) if isinstance(o, set) else str(o))
    )


def _allocate(weights: list[float], size: int) -> list[int]:
    """Split ``size`` by weights with the largest-remainder rule (counts sum exactly to ``size``)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = size * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: size - counts.sum()]] += 1
    return counts.tolist()


def _task_problems(
    spec: TaskSpec, label: str, count: int, split: str, seed: int, heldout_fraction: float
) -> list[Problem]:
    """The first ``count`` items of the task's stream that belong to ``split``."""
    rg_seed = derive_seed(seed, split, label)
    max_draws = max(2_000, 50 * count)
    ds = gym_dataset(spec.name, spec.config, rg_seed, size=max_draws)
    category = category_of(spec.name)
    out: list[Problem] = []
    for idx in range(max_draws):
        if len(out) == count:
            return out
        entry = ds[idx]
        if split_of(spec.name, entry["question"], heldout_fraction) != split:
            continue
        meta = {
            "rg_task": spec.name,
            "rg_config": json_safe(spec.config),
            "rg_seed": rg_seed,
            "rg_index": idx,
            "rg_entry": json_safe(entry),
        }
        out.append(
            Problem(
                uid=f"{label}/{split}/{len(out)}",
                source=spec.name,
                category=category,
                question=entry["question"],
                answer=str(entry["answer"]),
                solution=None,
                verifier="reasoning_gym",
                metadata=meta,
            )
        )
    if len(out) < count:
        raise ValueError(
            f"task {spec.name!r} with config {spec.config}: only {len(out)} of {count} {split} problems "
            f"found in {max_draws} draws; its question space is too small for this split (heldout_fraction="
            f"{heldout_fraction}); ask for fewer problems or make the task harder"
        )
    return out


def reasoning_gym_problems(
    specs: list[TaskSpec],
    *,
    size: int,
    split: Split,
    seed: int,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
) -> list[Problem]:
    """``size`` problems from a weighted mixture of reasoning-gym tasks, shuffled with ``seed``.

    Problem ``k`` of a task is the same for any ``size`` (larger sizes extend the list). Questions may repeat
    within a split when a task's question space is small (reasoning-gym samples with replacement), but never
    across splits (module docstring). uids are ``"<task>/<split>/<k>"`` (``"<task>#<j>/..."`` when a task
    appears more than once in ``specs``); they are unique within one (specs, seed).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not specs:
        raise ValueError("specs is empty: give at least one TaskSpec (or a mixture name from MIXTURES)")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    names = [s.name for s in specs]
    labels = [n if names.count(n) == 1 else f"{n}#{j}" for j, n in enumerate(names)]
    problems: list[Problem] = []
    for spec, label, count in zip(specs, labels, _allocate([s.weight for s in specs], size), strict=True):
        if count:
            problems += _task_problems(spec, label, count, split, seed, heldout_fraction)
    rng = np.random.default_rng(derive_seed(seed, split, "shuffle"))
    return [problems[i] for i in rng.permutation(len(problems))]


def gym_entry(problem: Problem) -> dict:
    """The reasoning-gym entry to score against: regenerated from (task, config, seed, index) when possible,
    because some scorers need Python types (tuples) that JSON loses; else the stored JSON entry."""
    meta = problem.metadata
    entry = meta.get("rg_entry")
    if "rg_seed" in meta and "rg_index" in meta:
        ds = gym_dataset(meta["rg_task"], meta.get("rg_config", {}), meta["rg_seed"])
        fresh = ds[int(meta["rg_index"])]
        if entry is None or fresh["question"] == entry.get("question"):
            return fresh
    if entry is None:
        raise ValueError(f"problem {problem.uid!r}: metadata has no 'rg_entry' to score against")
    return entry
