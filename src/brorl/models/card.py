"""The model card (``README.md`` in a saved model directory): what the model is, its data, steps and scores.

Rendered from plain values so that the card of every ``brorl sft`` run, the default policy's included, records
the exact command and the measured per-task held-out pass@1 next to the weights they describe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

TEMPLATE = """---
library_name: transformers
pipeline_tag: text-generation
tags: [brorl, sft, reasoning-gym]
---

# {title}

{summary}

- architecture: `{architecture}`, {parameters:,} parameters, vocabulary {vocab_size:,}
- trained by `brorl sft` (brorl {version}) for {steps_done:,} optimizer steps of {batch_size} sequences
  ({seconds:.0f} s of training on {threads} CPU thread(s){stopped})
- seed {seed}; torch {torch_version}, transformers {transformers_version}

## Command

```
{command}
```

## Data

{data}

Prompt format: the prompt is `format_prompt(problem, answer_format="{answer_format}")` from `brorl.data`, the
target is {target_desc}, followed by the eos token; the loss is on target tokens only.
{dropped}
## Held-out pass@1 (temperature 1)

{eval_desc}

| task | pass@1 |
|---|---|
{score_rows}
| **mean** | **{mean:.1%}** |

Final training loss (mean of the last 50 steps): {final_loss:.4f}.

## Limits

A tiny model trained for minutes on a handful of easy procedurally generated tasks: it is a starting policy for
testing RL code on a CPU, not a useful reasoner. Scores are on problems from the same generators with held-out
seeds, so they measure in-distribution skill only.
"""


def render_model_card(
    *,
    title: str,
    summary: str,
    facts: Mapping[str, Any],
    data_lines: Sequence[str],
    scores: Mapping[str, float],
    command: str,
) -> str:
    """Fill :data:`TEMPLATE`. ``facts`` holds the scalar fields named in the template (architecture, steps, …);
    ``scores`` maps task name → pass@1 in [0, 1]."""
    rows = "\n".join(f"| {task} | {score:.1%} |" for task, score in sorted(scores.items()))
    mean = sum(scores.values()) / len(scores) if scores else float("nan")
    dropped = facts.get("dropped", 0)
    values = dict(facts)
    values.update(
        title=title,
        summary=summary,
        command=command or "(called from Python)",
        data="\n".join(f"- {line}" for line in data_lines),
        score_rows=rows,
        mean=mean,
        stopped=", stopped early by the wall-clock cap" if facts.get("stopped_by_time") else "",
        dropped=f"\n{dropped} training examples longer than max_length were dropped.\n" if dropped else "",
    )
    return TEMPLATE.format(**values)
