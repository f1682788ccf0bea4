"""BroRL's theory: the mass balance equation (Theorem 1), Lemma 2 / Corollary 3, and the token-level simulator.

Pure numpy/torch maths; no models, no trainer. docs/theory.md maps each equation to its function.
"""

from brorl.theory.mass_balance import (
    MassBalance,
    expected_unsampled_second_moment,
    mass_balance,
    pass_at_k_from_mass,
)

__all__ = ["MassBalance", "expected_unsampled_second_moment", "mass_balance", "pass_at_k_from_mass"]
