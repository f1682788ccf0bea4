"""Pure sampling functions: counter-based uniforms, top-k / top-p processing, inverse-CDF draws."""

from __future__ import annotations

import math

import pytest
import torch

from brorl.rollout import counter_uniforms, process_logits, sample_tokens
from brorl.rollout.sampling import SamplingWorkspace, inverse_cdf


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


def _reference_sample(logits, uniforms, temperature, top_k, top_p):
    """The straightforward sampler: log_softmax of the processed logits, a float64 CDF over the whole vocabulary."""
    logp = torch.log_softmax(process_logits(logits, temperature, top_k, top_p), dim=-1)
    cdf = torch.cumsum(logp.exp().double(), dim=-1)
    target = uniforms[:, None] * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, target).clamp_(max=logits.shape[-1] - 1)[:, 0]
    raw = torch.log_softmax(logits.float(), dim=-1)
    return tokens, logp.gather(1, tokens[:, None])[:, 0], raw.gather(1, tokens[:, None])[:, 0]


@pytest.mark.parametrize("vocab", [7, 50, 1000, 4099])  # 4099: not a multiple of the CDF block width
@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 0, 0.9), (1.3, 5, 0.8), (1.0, 5, 1.0)],
)
def test_sample_tokens_matches_the_full_cdf_reference(vocab, temperature, top_k, top_p):
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(300, vocab, generator=g) * 3
    u = counter_uniforms(2, torch.arange(300) // 10, torch.arange(300) % 10, 4)
    tokens, logp, raw = sample_tokens(logits, u, temperature=temperature, top_k=top_k, top_p=top_p)
    ref_tokens, ref_logp, ref_raw = _reference_sample(logits, u, temperature, top_k, top_p)
    assert torch.equal(tokens, ref_tokens)
    assert torch.allclose(logp, ref_logp, atol=1e-5)
    assert torch.allclose(raw, ref_raw, atol=1e-5)


def test_no_truncation_fast_path_equals_the_truncating_path_when_nothing_is_cut():
    # With every probability above 1e-4, top_p = 1 - 1e-6 keeps every token: the truncating path (threshold,
    # masked weights, kept-mass correction) must then agree with the no-truncation path (softmax as weights).
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(400, 64, generator=g)
    u = counter_uniforms(0, torch.zeros(400, dtype=torch.long), torch.arange(400), 0)
    for temperature in (1.0, 0.8):
        fast = sample_tokens(logits, u, temperature=temperature, top_k=0, top_p=1.0)
        general = sample_tokens(logits, u, temperature=temperature, top_k=0, top_p=1 - 1e-6)
        assert torch.isfinite(process_logits(logits, temperature, 0, 1 - 1e-6)).all()  # nothing was cut
        assert torch.equal(fast[0], general[0])
        assert torch.allclose(fast[1], general[1], atol=1e-6)
        assert torch.equal(fast[2], general[2])


def test_inverse_cdf_picks_the_interval_containing_u_even_for_tiny_probabilities():
    # One token holds almost all the mass; 3,000 tail tokens have weights ~1e-10 of it, spread over many blocks.
    # For each probed tail token i, u is put in the middle of its interval [C_{i-1}, C_i) of the exact (float64)
    # cumulative sum: the sampler must return i. A float32 CDF cannot resolve these intervals.
    v = 3001
    weights = torch.full((1, v), 1e-10)
    weights[0, 0] = 1.0
    weights[0, 1::7] = 3e-10  # uneven tail
    cdf = torch.cumsum(weights.double(), dim=1)[0]
    total = cdf[-1]
    probes = [1, 2, 63, 64, 65, 1000, 2047, 2048, 2999, 3000]
    u = torch.stack([(cdf[i - 1] + weights[0, i].double() / 2) / total for i in probes])
    tokens, totals = inverse_cdf(weights.expand(len(probes), v).contiguous(), u)
    assert tokens.tolist() == probes
    assert torch.allclose(totals, total.expand(len(probes)), rtol=1e-15)
    cdf32 = torch.cumsum(weights[0], dim=0)  # what a float32 CDF would pick
    float32_picks = torch.searchsorted(cdf32, (u * float(cdf32[-1])).float()[:, None])[:, 0].tolist()
    assert float32_picks != probes


def test_inverse_cdf_never_draws_a_zero_weight_token():
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(50, 300, generator=g)
    weights[weights < 0.7] = 0  # zeros everywhere, including whole blocks and block ends
    weights[:, -5:] = 0
    u = torch.cat(
        [torch.full((25,), 1e-12, dtype=torch.float64), torch.full((25,), 1 - 1e-12, dtype=torch.float64)]
    )
    tokens, _ = inverse_cdf(weights, u)
    assert (weights.gather(1, tokens[:, None]) > 0).all()


def test_workspace_reuse_gives_identical_results_across_shapes():
    g = torch.Generator().manual_seed(4)
    ws = SamplingWorkspace()
    for rows, temperature, top_k, top_p in (
        (64, 1.0, 0, 0.9),
        (40, 0.5, 3, 0.95),
        (64, 1.0, 0, 1.0),
        (7, 0, 0, 1),
    ):
        logits = torch.randn(rows, 100, generator=g) * 2
        u = counter_uniforms(1, torch.zeros(rows, dtype=torch.long), torch.arange(rows), 3)
        kwargs = dict(temperature=temperature, top_k=top_k, top_p=top_p)
        fresh = sample_tokens(logits, u, **kwargs)
        reused = sample_tokens(logits, u, workspace=ws, **kwargs)
        for a, b in zip(fresh, reused, strict=True):
            assert torch.equal(a, b)


def test_top_k_with_infinite_logits_masks_without_nan():
    logits = torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")], [2.0, float("-inf"), 1.0, 0.5]])
    out = process_logits(logits, 1.0, 3, 1.0)  # row 0 has only 2 finite logits: the 3rd largest is -inf
    expected = torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")], [2.0, float("-inf"), 1.0, 0.5]])
    assert torch.equal(out, expected)
    tokens, logp, _ = sample_tokens(
        logits, torch.tensor([0.5, 0.5], dtype=torch.float64), temperature=1.0, top_k=3, top_p=1.0
    )
    assert torch.isfinite(logp).all() and tokens[0].item() in (0, 1)
