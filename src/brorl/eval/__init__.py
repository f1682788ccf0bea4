"""Evaluation: unbiased pass@k, evaluation runs, paired comparison, knowledge shrinkage, run plots.

BroRL App. D / BRORL.md §5: pass@1 averaged over 16 samples (temperature 0.6, top-p 0.95), per-task tables, a
paired t-test over instances, and per-task trajectories. Commands: ``brorl eval``, ``brorl compare``,
``brorl report``; the directory formats are in docs/evaluation.md.

    brorl eval --model RUN/checkpoints/step_000100 --tasks tiny-default --instances 50
    brorl compare RUN_A/eval RUN_B/eval --base BASE_EVAL
    brorl report RUN_DIR

Modules: ``passk`` (estimators, aggregation), ``tables`` (CSV/Markdown), ``compare`` (t-test, shrinkage,
patterns), ``io`` (evaluation and run directories), ``runner`` (evaluating a model), ``plots`` (PNG figures).
"""

from brorl.eval.compare import (
    PATTERNS,
    PairedTTest,
    classify_pattern,
    knowledge_shrinkage,
    pair_instances,
    paired_t_test,
    task_deltas,
    task_patterns,
)
from brorl.eval.passk import InstanceResult, aggregate, macro_row, pass_at_k, summary_metrics

__all__ = [
    "PATTERNS",
    "InstanceResult",
    "PairedTTest",
    "aggregate",
    "classify_pattern",
    "knowledge_shrinkage",
    "macro_row",
    "pair_instances",
    "paired_t_test",
    "pass_at_k",
    "summary_metrics",
    "task_deltas",
    "task_patterns",
]
