"""Pure sampling functions: counter-based uniforms, top-k / top-p processing, inverse-CDF draws."""

from __future__ import annotations

import math

import pytest
import torch

from brorl.rollout import counter_uniforms, process_logits, sample_tokens


def test_counter_uniforms_are_a_pure_function_of_their_keys():
    keys, samples = torch.tensor([0, 0, 5, 7]), torch.tensor([0, 1, 0, 3])
    a = counter_uniforms(3, keys, samples, 4)
    assert torch.equal(a, counter_uniforms(3, keys, samples, 4))
    # Evaluating a single row alone gives the same value: no dependence on batch composition.
    assert counter_uniforms(3, keys[2:3], samples[2:3], 4).item() == a[2].item()
    assert len(set(a.tolist())) == 4
    for other in (counter_uniforms(4, keys, samples, 4), counter_uniforms(3, keys, samples, 5)):
        assert not torch.equal(a, other)
    # Swapping prompt and sample index must not collide.
    assert counter_uniforms(0, torch.tensor([1]), torch.tensor([2]), 0) != counter_uniforms(
        0, torch.tensor([2]), torch.tensor([1]), 0
    )


def test_counter_uniforms_are_uniform_in_the_open_interval():
    n = 200_000
    u = counter_uniforms(11, torch.arange(n) // 100, torch.arange(n) % 100, torch.arange(n) % 7)
    assert float(u.min()) > 0 and float(u.max()) < 1
    counts = torch.histc(u.float(), bins=20, min=0, max=1)
    expected = n / 20
    # Chi-square with 19 dof: the 99.9% quantile is ~43.8; a biased hash fails this by orders of magnitude.
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8, chi2


def _reference_top_p(probs: list[float], top_p: float) -> set[int]:
    """Readable nucleus: walk tokens from most to least likely, keep while the mass before them is < top_p."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), 0.0
    for i in order:
        if mass >= top_p:
            break
        kept.add(i)
        mass += probs[i]
    return kept


@pytest.mark.parametrize(
    ("probs", "top_k", "top_p", "kept"),
    [
        ([0.5, 0.3, 0.15, 0.05], 0, 1.0, {0, 1, 2, 3}),  # nothing disabled
        ([0.5, 0.3, 0.15, 0.05], 0, 0.8, {0, 1}),  # mass before token 2 is 0.8, not < 0.8
        ([0.5, 0.3, 0.15, 0.05], 0, 0.81, {0, 1, 2}),
        ([0.5, 0.3, 0.15, 0.05], 0, 0.1, {0}),  # the most likely token always survives
        ([0.05, 0.15, 0.3, 0.5], 2, 1.0, {2, 3}),  # top-k keeps the two largest wherever they are
        ([0.05, 0.15, 0.3, 0.5], 3, 0.5, {3}),  # top-k then top-p: 0.5/0.95 >= 0.5 so only token 3
        ([0.05, 0.15, 0.3, 0.5], 3, 0.6, {2, 3}),
    ],
)
def test_process_logits_keeps_the_hand_computed_set(probs, top_k, top_p, kept):
    logits = torch.tensor([probs]).log()
    out = process_logits(logits, 1.0, top_k, top_p)[0]
    assert {i for i in range(len(probs)) if math.isfinite(out[i].item())} == kept


def test_process_logits_matches_readable_reference_on_random_rows():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g) * 2
    for temperature, top_p in ((1.0, 0.9), (0.7, 0.5), (1.3, 0.99)):
        out = process_logits(logits, temperature, 0, top_p)
        probs = torch.softmax(logits / temperature, dim=-1)
        for row in range(logits.shape[0]):
            kept = {i for i in range(50) if math.isfinite(out[row, i].item())}
            assert kept == _reference_top_p(probs[row].tolist(), top_p)
            assert torch.allclose(out[row, sorted(kept)], logits[row, sorted(kept)] / temperature)


def test_sample_tokens_draws_with_the_right_frequencies_and_logprobs():
    probs = torch.tensor([0.1, 0.2, 0.0, 0.3, 0.4])
    n = 40_000
    logits = probs.log().expand(n, -1)
    u = counter_uniforms(5, torch.zeros(n, dtype=torch.long), torch.arange(n), 0)
    tokens, logp, raw = sample_tokens(logits, u, temperature=1.0, top_k=0, top_p=1.0)
    freq = torch.bincount(tokens, minlength=5).double() / n
    assert freq[2] == 0  # a zero-probability token is never drawn
    assert torch.allclose(freq, probs.double(), atol=0.01), freq
    assert torch.allclose(logp, probs.log()[tokens])
    assert torch.allclose(raw, probs.log()[tokens])


def test_sample_tokens_reports_logprobs_of_the_processed_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tokens, logp, raw = sample_tokens(
        logits, torch.tensor([0.3], dtype=torch.float64), temperature=0.5, top_k=2, top_p=1.0
    )
    # Only tokens 0 and 1 survive top-k; at temperature 0.5 their logits are 4 and 2.
    expected = torch.log_softmax(torch.tensor([4.0, 2.0]), dim=0)[tokens.item()]
    assert tokens.item() in (0, 1)
    assert logp.item() == pytest.approx(expected.item(), abs=1e-6)
    assert raw.item() == pytest.approx(torch.log_softmax(logits[0], 0)[tokens.item()].item(), abs=1e-6)


def test_greedy_takes_argmax_with_logprob_zero():
    logits = torch.tensor([[0.1, 3.0, -2.0], [5.0, 4.0, 0.0]])
    tokens, logp, raw = sample_tokens(
        logits, torch.rand(2, dtype=torch.float64), temperature=0, top_k=0, top_p=1
    )
    assert tokens.tolist() == [1, 0]
    assert logp.tolist() == [0.0, 0.0]
    assert torch.allclose(raw, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])
