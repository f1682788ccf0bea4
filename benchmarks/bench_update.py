"""Does the training pass gain from computing the prompt once per group, and is its memory bounded in N?

Issue "the BroRL trainer" goals, on a tiny Llama-architecture model with random weights:

- ``shared_vs_plain_tokens_per_s``: training (forward + backward) response tokens/s at N = 512 with the prompt
  forwarded once per group (``brorl.trainer.logprobs.group_logprobs``) over forwarding prompt + response for every
  rollout (``plain_logprobs``), with a prompt as long as the response (64 + 64 tokens). Goal ≥ 2.
- ``peak_mem_ratio``: peak resident memory of the shared training pass at N = 1024 over N = 64 under one
  micro-batch token budget (1,024 tokens: 16 rows, so both N run several micro-batches), each measured in a fresh
  subprocess. Goal ≤ 1.2. (With a budget that fits all 64 rows in one micro-batch, N = 64 never reaches the
  allocator's steady state and the ratio reads ~1.25 while memory is flat from N = 256 to 1,024.)

The baseline forwards prompt + response for every rollout and, like TRL, computes logits only for the response
positions (``logits_to_keep``), so the ratio credits the shared prompt alone, not a cheaper LM head.

- ``linear_macs_ratio``: what the speed-up could be if only the linear layers cost time: their multiply-adds in
  the plain pass over the shared one (decoder layers and LM head; see :func:`linear_macs_ratio`). The LM head and
  its log-softmax run once per response token in both passes, so with P = T the ratio is below 2 (1.88 for the
  default model, whose LM head is 15% of its per-token matmuls). ``fraction_of_linear_bound`` is the measured
  speed-up over it.

    python benchmarks/bench_update.py
    python benchmarks/bench_update.py --n 512 --prompt-len 64 --response-len 64 --repeats 3

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def tiny_llama(vocab: int = 2048, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def make_group(n: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (prompt_len,), generator=g)
    responses = torch.randint(0, vocab, (n, response_len), generator=g)
    mask = torch.ones(n, response_len, dtype=torch.bool)
    return prompt, responses, mask


def linear_macs_ratio(model, n: int, prompt_len: int, response_len: int) -> float:
    """Multiply-accumulates in linear layers (the matmuls that dominate the pass), plain over shared, for one group.

    Per token a decoder costs ``layer`` MACs and the LM head ``head``. Plain: N rows of P + T tokens through the
    decoder, logits at T + 1 positions (``logits_to_keep``). Shared: the prompt once (P tokens, logits at every
    position), then N rows of T - 1 tokens (token 0 is scored from the prompt's last logits). Forward and backward
    scale both alike, so the ratio is the speed-up a pass could reach if nothing but these matmuls cost time.
    """
    head = model.get_output_embeddings()
    layers = sum(
        m.in_features * m.out_features
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head
    )
    vocab_macs = head.in_features * head.out_features
    plain = n * ((prompt_len + response_len) * layers + (response_len + 1) * vocab_macs)
    shared = prompt_len * (layers + vocab_macs) + n * (response_len - 1) * (layers + vocab_macs)
    return plain / shared


def train_pass(fn, model, prompt, responses, mask, rows_per_micro: int) -> float:
    """Seconds for one forward + backward over the group with a token-mean loss."""
    total = float(mask.sum())

    def loss_fn(rows, logp, _ent):
        return -(logp * mask[rows]).sum() / total

    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    fn(model, prompt, responses, mask, rows_per_micro=rows_per_micro, loss_fn=loss_fn)
    return time.perf_counter() - t0


def peak_rss_mib(n: int, prompt_len: int, response_len: int, tokens: int) -> float:
    """Peak RSS of a fresh process that runs one shared training pass at this N (MiB)."""
    code = f"""
import sys; sys.path.insert(0, {sys.path[0]!r})
from bench_update import tiny_llama, make_group, train_pass
from brorl.trainer.logprobs import group_logprobs
m = tiny_llama()
p, r, mask = make_group({n}, {prompt_len}, {response_len}, 2048)
train_pass(group_logprobs, m, p, r, mask, max(1, {tokens} // {response_len}))
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=64)
    ap.add_argument("--micro-tokens", type=int, default=1024, help="token budget of one micro-batch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from brorl.trainer.logprobs import group_logprobs, plain_logprobs

    model = tiny_llama()
    prompt, responses, mask = make_group(args.n, args.prompt_len, args.response_len, 2048)
    rows = max(1, args.micro_tokens // args.response_len)
    plain_rows = max(1, args.micro_tokens // (args.prompt_len + args.response_len))
    train_pass(group_logprobs, model, prompt, responses[:8], mask[:8], rows)  # warm-up
    pairs = []  # interleaved, so a change of load hits both passes alike
    for _ in range(args.repeats):
        pairs.append(
            (
                train_pass(group_logprobs, model, prompt, responses, mask, rows),
                train_pass(plain_logprobs, model, prompt, responses, mask, plain_rows),
            )
        )
    shared, plain = min(p[0] for p in pairs), min(p[1] for p in pairs)
    tokens = float(mask.sum())
    bound = linear_macs_ratio(model, args.n, args.prompt_len, args.response_len)
    mem64 = peak_rss_mib(64, args.prompt_len, args.response_len, args.micro_tokens)
    mem1024 = peak_rss_mib(1024, args.prompt_len, args.response_len, args.micro_tokens)
    print(
        json.dumps(
            {
                "benchmark": "update",
                "n": args.n,
                "prompt_len": args.prompt_len,
                "response_len": args.response_len,
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "shared_tokens_per_s": round(tokens / shared, 1),
                "plain_tokens_per_s": round(tokens / plain, 1),
                "shared_vs_plain_tokens_per_s": round(plain / shared, 2),
                "pair_ratios": [round(b / a, 2) for a, b in pairs],
                "linear_macs_ratio": round(bound, 3),
                "fraction_of_linear_bound": round(plain / shared / bound, 3),
                "peak_rss_mib_n64": round(mem64, 1),
                "peak_rss_mib_n1024": round(mem1024, 1),
                "peak_mem_ratio": round(mem1024 / mem64, 3),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
