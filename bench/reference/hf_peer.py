#!/usr/bin/env python3
"""PyTorch/transformers peer of `llamacu bench`, for the GPU machine.

Builds a randomly initialised LlamaForCausalLM of one of llamacu's synthetic shapes (tiny, 110m, 7b,
13b, 70b: the same dims as model.Tiny, model.Bench110M and the LLaMA 2 presets) in fp16 on CUDA and
times, as `llamacu bench` does:

  pp  prompt processing: one forward pass of p tokens of one sequence at KV depth d
      (tokens/s = p / time);
  tg  token generation: n decode steps, each one token of each of B sequences at KV depth d,
      d+1, ... (tokens/s = n*B / time).

Each test runs --warmup untimed repetitions, then --reps timed ones; the report gives mean and
sample standard deviation. Timing is wall time around the work with torch.cuda.synchronize()
before and after, so it includes Python and launch overhead, as llamacu's includes Go's. Sampling
is not timed (neither side samples); logits are computed for the last prompt token (pp) and for
every sequence (tg).

Modes (--mode):
  eager    DynamicCache. The KV cache at depth d is filled with zeros rather than computed,
           exactly as llamacu does (attention costs the same whatever the cached values).
  compile  torch.compile(mode="reduce-overhead") with a StaticCache of d+max(p, n) positions,
           where the installed transformers supports it; a test that fails to compile is listed
           in "skipped" with the exception. With a static cache, attention spans the whole
           cache (masked), so its cost follows the cache size, not d.

It prints one JSON report per mode on stdout in llamacu's schema ("llamacu-bench/1",
documented in bench/results/README.md), with tool "transformers-eager" or "transformers-compile",
so that a GPU report can give "llamacu vs PyTorch on this card" as a ratio of matching rows.

    python3 bench/reference/hf_peer.py --shape 7b -p 512 -n 128 --batch 1,8,32 --depth 0,2048 \\
        --mode eager,compile > bench/results/hf-7b-h100.jsonl
"""

import argparse
import datetime
import inspect
import json
import os
import platform
import statistics
import sys
import time

SHAPES = {
    # name: (dim, layers, heads, kv_heads, ffn, vocab, max_seq), as in llamacu's model/config.go
    "tiny": (128, 4, 8, 4, 352, 512, 512),
    "110m": (768, 12, 12, 12, 2048, 32000, 1024),
    "7b": (4096, 32, 32, 32, 11008, 32000, 4096),
    "13b": (5120, 40, 40, 40, 13824, 32000, 4096),
    "70b": (8192, 80, 64, 8, 28672, 32000, 4096),
}
NAMES = {"tiny": "llama-tiny-synthetic", "110m": "llama-110m-synthetic", "7b": "llama-2-7b",
         "13b": "llama-2-13b", "70b": "llama-2-70b"}


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def summarize(xs):
    """The fields of llamacu's bench.Summary (percentiles: linear interpolation, NumPy's default)."""
    s = sorted(xs)
    n = len(s)

    def pct(p):
        h = (n - 1) * p / 100.0
        lo = int(h)
        if lo >= n - 1:
            return s[-1]
        return s[lo] + (h - lo) * (s[lo + 1] - s[lo])

    return {"n": n, "mean": statistics.fmean(s), "stddev": statistics.stdev(s) if n > 1 else 0.0,
            "min": s[0], "max": s[-1], "median": pct(50), "p90": pct(90), "p99": pct(99)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def copy_gbps(torch, dev):
    """Device-to-device copy bandwidth: bytes read + written per second, best of 10, 1 GiB."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(10):
        t0 = time.perf_counter()
        b.copy_(a)
        torch.cuda.synchronize()
        best = max(best, 2 * n / (time.perf_counter() - t0))
    del a, b
    torch.cuda.empty_cache()
    return best / 1e9


def build(torch, transformers, shape, dev):
    dim, layers, heads, kv, ffn, vocab, max_seq = SHAPES[shape]
    cfg = transformers.LlamaConfig(
        hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
        intermediate_size=ffn, vocab_size=vocab, max_position_embeddings=max_seq, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False, torch_dtype=torch.float16)
    torch.manual_seed(1)
    with torch.device(dev):
        model = transformers.LlamaForCausalLM(cfg).to(torch.float16)
    model.eval()
    return cfg, model


def zero_cache(torch, transformers, cfg, batch, depth, dev):
    """A DynamicCache holding depth positions of zeros for batch sequences."""
    cache = transformers.DynamicCache()
    if depth == 0:
        return cache
    hd = cfg.hidden_size // cfg.num_attention_heads
    for layer in range(cfg.num_hidden_layers):
        k = torch.zeros(batch, cfg.num_key_value_heads, depth, hd, dtype=torch.float16, device=dev)
        cache.update(k, torch.zeros_like(k), layer)
    return cache


def static_cache(torch, transformers, cfg, batch, length, dev):
    """A StaticCache; its constructor's arguments changed across transformers versions."""
    tries = [dict(config=cfg, max_batch_size=batch, max_cache_len=length, device=dev, dtype=torch.float16),
             dict(config=cfg, batch_size=batch, max_cache_len=length, device=dev, dtype=torch.float16),
             dict(config=cfg, max_cache_len=length)]
    last = None
    for kw in tries:
        try:
            return transformers.StaticCache(**kw)
        except TypeError as e:
            last = e
    raise last


def timed(torch, fn, reps, warmup):
    for _ in range(warmup):
        fn()
    secs = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        secs.append(time.perf_counter() - t0)
    return secs


def run_mode(torch, transformers, args, mode, cfg, model, dev, copy):
    gen = torch.Generator(device=dev).manual_seed(1)
    vocab = cfg.vocab_size
    forward = model.forward
    if mode == "compile":
        forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    results, skipped = [], []
    # Logits of the last prompt token only, as llamacu computes them (the argument's name changed).
    params = inspect.signature(model.forward).parameters
    last_only = {k: 1 for k in ("logits_to_keep", "num_logits_to_keep") if k in params}

    def result(test, kind, batch, depth, tokens, steps, secs):
        return {"test": test, "kind": kind, "batch": batch, "depth": depth, "tokens": tokens, "steps": steps,
                "seconds": secs, "tok_s": summarize([tokens / s for s in secs])}

    for d in args.depth:
        tests = []
        if args.p > 0:
            tests.append(("pp", 1))
        if args.n > 0:
            tests += [("tg", b) for b in args.batch]
        for kind, b in tests:
            length = args.p if kind == "pp" else args.n
            name = f"{kind}{length}"
            if d + length > cfg.max_position_embeddings:
                skipped.append(f"{name} at depth {d}: {d + length} positions exceed the context of {cfg.max_position_embeddings}")
                continue
            try:
                with torch.inference_mode():
                    if mode == "eager":
                        cache = zero_cache(torch, transformers, cfg, b, d, dev)

                        def reset():
                            if d == 0:
                                return transformers.DynamicCache()
                            cache.crop(d)
                            return cache
                    else:
                        cache = static_cache(torch, transformers, cfg, b, d + length, dev)

                        def reset():
                            return cache

                    if kind == "pp":
                        ids = torch.randint(0, vocab, (1, args.p), device=dev, generator=gen)
                        pos = torch.arange(d, d + args.p, device=dev)

                        def rep():
                            forward(input_ids=ids, past_key_values=reset(), cache_position=pos, use_cache=True,
                                    **last_only)
                        secs = timed(torch, rep, args.reps, args.warmup)
                        results.append(result(name, "pp", 1, d, args.p, 1, secs))
                    else:
                        ids = torch.randint(0, vocab, (args.n, b, 1), device=dev, generator=gen)
                        positions = [torch.tensor([d + j], device=dev) for j in range(args.n)]

                        def rep():
                            c = reset()
                            for j in range(args.n):
                                forward(input_ids=ids[j], past_key_values=c, cache_position=positions[j], use_cache=True)
                        secs = timed(torch, rep, args.reps, args.warmup)
                        results.append(result(name, "tg", b, d, args.n * b, args.n, secs))
                print(f"{mode} {name} b{b} d{d}: {results[-1]['tok_s']['mean']:.1f} tok/s", file=sys.stderr)
            except Exception as e:  # a mode that does not work here is reported, not fatal
                skipped.append(f"{name} b{b} d{d} ({mode}): {type(e).__name__}: {e}"[:500])
                print(skipped[-1], file=sys.stderr)
            torch.cuda.empty_cache()

    n_params = sum(p.numel() for p in model.parameters())
    return {
        "schema": "llamacu-bench/1",
        "tool": f"transformers-{mode}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": os.environ.get("LLAMACU_COMMIT", "unknown"),
        "host": {"cpu": cpu_model(), "cores": os.cpu_count(), "os": f"{platform.system()}/{platform.machine()}, {platform.release()}"},
        "device": {"name": torch.cuda.get_device_name(dev), "driver": f"CUDA {torch.version.cuda}",
                   "copy_gbps": copy, "copy_method": "torch copy_ of 1 GiB on the device, read+write bytes, best of 10"},
        "backend": f"torch {torch.__version__}, transformers {transformers.__version__}, {mode}",
        "model": {"name": NAMES[args.shape], "source": f"synthetic {args.shape} (torch.manual_seed(1) random init)",
                  "params": n_params, "dtype": "F16", "weight_bytes": 2 * n_params,
                  "config": {"name": NAMES[args.shape], "dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers,
                             "n_heads": cfg.num_attention_heads, "n_kv_heads": cfg.num_key_value_heads,
                             "ffn_dim": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
                             "max_seq_len": cfg.max_position_embeddings, "norm_eps": cfg.rms_norm_eps,
                             "rope_theta": 10000.0, "tied_output": False}},
        "settings": {"p": args.p, "n": args.n, "batch": args.batch, "depth": args.depth, "reps": args.reps,
                     "warmup": args.warmup},
        "results": results,
        "skipped": skipped,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("-p", type=int, default=512, help="prompt tokens of pp (0: none)")
    ap.add_argument("-n", type=int, default=128, help="decode steps of tg (0: none)")
    ap.add_argument("--batch", type=ints, default=[1, 8, 32])
    ap.add_argument("--depth", type=ints, default=[0, 2048])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--mode", default="eager,compile", help="comma-separated: eager, compile")
    args = ap.parse_args()

    import torch
    import transformers

    if not torch.cuda.is_available():
        sys.exit("hf_peer.py: no CUDA device")
    dev = torch.device("cuda:0")
    copy = copy_gbps(torch, dev)
    cfg, model = build(torch, transformers, args.shape, dev)
    for mode in [m.strip() for m in args.mode.split(",") if m.strip()]:
        if mode not in ("eager", "compile"):
            sys.exit(f"hf_peer.py: unknown mode {mode!r}")
        print(json.dumps(run_mode(torch, transformers, args, mode, cfg, model, dev, copy)), flush=True)


if __name__ == "__main__":
    main()
