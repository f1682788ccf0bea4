"""Task sources for BroRL: reasoning-gym mixtures with disjoint train / held-out splits, user files (JSONL,
Parquet, Hugging Face ``save_to_disk``), and prompt formatting with the matching answer extraction.

Everything here produces :class:`Problem` records: plain, picklable data with what a verifier in
``brorl.rewards`` needs. See docs/data.md.

    from brorl.data import MIXTURES, reasoning_gym_problems, format_prompt
    train = reasoning_gym_problems(MIXTURES["tiny-default"], size=1000, split="train", seed=0)
    prompt = format_prompt(train[0], answer_format="answer_tag")
"""

from brorl.data.files import FieldMap, LoadReport, load_problems, normalize_tests
from brorl.data.gym import (
    MIXTURES,
    SPLITS,
    TINY_DEFAULT,
    categories,
    category_of,
    derive_seed,
    get_mixture,
    gym_dataset,
    gym_entry,
    reasoning_gym_problems,
    split_of,
    task_names,
)
from brorl.data.problem import VERIFIERS, Problem, TaskSpec, problem_from_dict, problem_to_dict
from brorl.data.prompts import EXTRACTORS, INSTRUCTIONS, TEMPLATES, extract_answer, format_prompt, last_boxed

__all__ = [
    "EXTRACTORS",
    "INSTRUCTIONS",
    "MIXTURES",
    "SPLITS",
    "TEMPLATES",
    "TINY_DEFAULT",
    "VERIFIERS",
    "FieldMap",
    "LoadReport",
    "Problem",
    "TaskSpec",
    "categories",
    "category_of",
    "derive_seed",
    "extract_answer",
    "format_prompt",
    "get_mixture",
    "gym_dataset",
    "gym_entry",
    "last_boxed",
    "load_problems",
    "normalize_tests",
    "problem_from_dict",
    "problem_to_dict",
    "reasoning_gym_problems",
    "split_of",
    "task_names",
]
