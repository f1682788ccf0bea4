"""Rollout engine benchmark (issue 3): speed against HF generate, large vs small N, FLOP efficiency, peak memory.

Builds a random-weight Llama-architecture model (~4M parameters) and a locally trained 2,048-token BPE tokenizer
(no downloads), then prints one JSON object:

- ``speedup_vs_hf_generate``: engine tokens/s over ``model.generate(num_return_sequences=N)`` at N=512, one
  64-token prompt, 64 new tokens, same sampling (temperature 1, top_p 0.95, EOS ignored). Goal >= 3.
- ``n512_vs_n16_samples_ratio``: engine samples/s at N=512 × 2 prompts over N=16 × 64 prompts. Goal >= 2.
- ``flops_fraction``: model FLOP/s achieved by the engine at N=512 over the fp32 matmul FLOP/s measured in this
  run. Model FLOPs per token = 2 × (parameters of every linear layer incl. the LM head) + attention
  (4 × layers × hidden × context length); embeddings, norms and sampling count as zero. Goal >= 0.3.
- ``peak_mem_ratio``: peak RSS (VmHWM) of a fresh process generating N=1024 over one generating N=64, same
  chunk budget (max_seqs=64). Goal <= 1.2.

    python benchmarks/bench_rollout.py            # full run, several minutes on 2 cores
    python benchmarks/bench_rollout.py --quick    # smaller N, a smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import torch

PROMPT_TOKENS = 64
NEW_TOKENS = 64
SAMPLING = {"temperature": 1.0, "top_p": 0.95}


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = ["what", "is", "sum", "of", "answer", "the", "count", "letters", "in", "word", "plus", "minus"]
    corpus = [
        " ".join(rng.choice(words) if rng.random() < 0.5 else str(rng.randint(0, 9999)) for _ in range(12))
        for _ in range(3000)
    ]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def build_model(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def make_prompts(count: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (count, PROMPT_TOKENS), generator=g).tolist()


def matmul_flops(size: int = 1024, repeats: int = 20) -> float:
    """Best fp32 matmul FLOP/s over a few timings of a (size × size) @ (size × size) product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - t0) / repeats)
    return 2 * size**3 / best


def model_flops_per_token(model, context: float) -> float:
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.config
    return 2 * linear + 4 * cfg.num_hidden_layers * cfg.hidden_size * context


def time_engine(engine, prompts, n: int) -> tuple[float, int]:
    from brorl.rollout import SamplingParams

    params = SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True, seed=1, **SAMPLING)
    t0 = time.perf_counter()
    batch = engine.generate(prompts, n, params)
    return time.perf_counter() - t0, int(batch.response_mask.sum())


def time_hf_generate(model, prompt: list[int], n: int) -> tuple[float, int]:
    ids = torch.tensor([prompt])
    torch.manual_seed(1)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=0,
            num_return_sequences=n,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=0,
            **SAMPLING,
        )
    return time.perf_counter() - t0, (out.shape[1] - ids.shape[1]) * n


def peak_rss_child(n: int, max_seqs: int) -> int:
    """VmHWM (kB) of a fresh interpreter that builds the model and generates n rollouts of one prompt."""
    out = subprocess.run(
        [sys.executable, __file__, "--mem-child", str(n), "--max-seqs", str(max_seqs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def mem_child(n: int, max_seqs: int) -> None:
    from brorl.rollout import HFRolloutEngine

    tok = build_tokenizer()
    model = build_model(len(tok))
    time_engine(HFRolloutEngine(model, tok, max_seqs=max_seqs), make_prompts(1, len(tok), 0), n)
    with open("/proc/self/status") as f:
        status = f.read()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N smoke run")
    parser.add_argument("--mem-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-seqs", type=int, default=512, help="engine decode batch budget")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mem_child:
        mem_child(args.mem_child, args.max_seqs)
        return
    from brorl.rollout import HFRolloutEngine

    big, small = (64, 4) if args.quick else (512, 16)
    tok = build_tokenizer()
    model = build_model(len(tok))
    engine = HFRolloutEngine(model, tok, max_seqs=args.max_seqs)
    time_engine(engine, make_prompts(1, len(tok), 9), 8)  # warm-up
    peak = matmul_flops()

    hf_s, hf_tokens = time_hf_generate(model, make_prompts(1, len(tok), 0)[0], big)
    eng_s, eng_tokens = time_engine(engine, make_prompts(1, len(tok), 0), big)
    many_s, many_tokens = time_engine(engine, make_prompts(2, len(tok), 1), big)
    few_s, few_tokens = time_engine(engine, make_prompts(2 * big // small, len(tok), 2), small)
    flops = model_flops_per_token(model, PROMPT_TOKENS + NEW_TOKENS / 2) * eng_tokens / eng_s
    mem_big, mem_small = (peak_rss_child(n, 64) for n in ((256, 16) if args.quick else (1024, 64)))
    print(
        json.dumps(
            {
                "speedup_vs_hf_generate": round((eng_tokens / eng_s) / (hf_tokens / hf_s), 3),
                "n512_vs_n16_samples_ratio": round((2 * big / many_s) / (2 * big / few_s), 3),
                "flops_fraction": round(flops / peak, 3),
                "peak_mem_ratio": round(mem_big / mem_small, 3),
                "engine_tokens_per_s": round(eng_tokens / eng_s, 1),
                "hf_generate_tokens_per_s": round(hf_tokens / hf_s, 1),
                "engine_n_big_samples_per_s": round(2 * big / many_s, 2),
                "engine_n_small_samples_per_s": round(2 * big / few_s, 2),
                "model_gflops_per_s": round(flops / 1e9, 2),
                "matmul_gflops_per_s": round(peak / 1e9, 2),
                "peak_rss_mb": {"n_big": mem_big // 1024, "n_small": mem_small // 1024},
                "params": sum(p.numel() for p in model.parameters()),
                "n_big": big,
                "n_small": small,
                "max_seqs": args.max_seqs,
                "threads": torch.get_num_threads(),
                "check_tokens": [hf_tokens, eng_tokens, many_tokens, few_tokens],
            }
        )
    )


if __name__ == "__main__":
    main()
