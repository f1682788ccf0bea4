"""brorl: reinforcement learning with verifiable rewards for language models, scaled by broadened exploration.

Implements BroRL (Hu et al., 2025, arXiv:2510.01180): the mass balance theory (``brorl.theory``), a large-N
rollout engine, verifiable rewards, the ProRLv2 algorithm, and evaluation. See README.md and docs/.
"""

__version__ = "0.1.0.dev0"
