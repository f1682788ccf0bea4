"""Verifiable rewards: answer extraction, verifiers (reasoning-gym's own scorers, math-verify, sandboxed code,
exact match) and the scoring pool with per-answer timeouts and within-group de-duplication. See
docs/rewards.md; the sandbox's isolation is described in :mod:`brorl.rewards.sandbox`.

    from brorl.rewards import RewardPool
    with RewardPool(workers=2, timeout_s=10) as pool:
        result = pool.score(problems, completions, n=N)   # result.rewards: (B*N,)
"""

from brorl.data.prompts import extract_answer
from brorl.rewards.pool import RewardPool, ScoreResult
from brorl.rewards.sandbox import CodeResult, SandboxLimits, run_code_tests, run_program, sandbox_info
from brorl.rewards.verifiers import VERIFY, extract_code, score_answer, verify_math, verify_math_answer

__all__ = [
    "VERIFY",
    "CodeResult",
    "RewardPool",
    "SandboxLimits",
    "ScoreResult",
    "extract_answer",
    "extract_code",
    "run_code_tests",
    "run_program",
    "sandbox_info",
    "score_answer",
    "verify_math",
    "verify_math_answer",
]
