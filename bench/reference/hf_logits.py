#!/usr/bin/env python3
"""Logits reference from PyTorch/transformers for llamacu's GPU and CPU backends.

Builds a seeded random-init LlamaForCausalLM (GQA, LLaMA 2 architecture), rounds its weights to
fp16, saves it as a Hugging Face folder (config.json + model.safetensors, lm_head stored: the
config does not tie it) that llamacu's HF loader reads, runs a fixed sequence of token ids through
it in eager mode twice, and writes the logits of every position:

  float16  the fp16 model on CUDA, as transformers runs it (fp16 activations, fp32 softmax);
  float32  the same fp16-rounded weights widened to fp32, TF32 off (the exact function llamacu's
           backends compute from the saved fp16 weights, up to the order of sums).

Output folder (--out), read by engine.ReadTransformersRef (engine/transformersref.go):

  config.json, model.safetensors   the model (transformers' save_pretrained, fp16)
  reference.json                   format "llamacu-hf-logits/1": token_ids, logit_rows (positions
                                   whose logits are stored, here all), vocab, runs [{name, dtype,
                                   file, shape}], meta (versions, device, seed, init, timings)
  logits_float16.f32, logits_float32.f32
                                   (len(logit_rows), vocab) row-major little-endian float32

Initialisation (not transformers' std-0.02 default, under which attention is near uniform and RoPE
or head-order bugs would hardly show): embeddings N(0, 1), every linear weight N(0, 1/fan_in),
norm weights 1 + 0.1·N(0, 1). Logits then have a standard deviation of about 1 and attention
scores one of about 1, so the softmax is far from uniform.

Needs torch, transformers (4.4x or 5.x) and safetensors; a CUDA device unless --device cpu.

    python3 bench/reference/hf_logits.py --out /tmp/llamacu-hfref
    (cd gpu && LLAMACU_HF_REF=/tmp/llamacu-hfref go test -tags cuda -run Transformers -v)
"""

import argparse
import copy
import inspect
import json
import math
import os
import platform
import struct
import sys
import time

FORMAT = "llamacu-hf-logits/1"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_config(transformers, a):
    """A LlamaConfig for the shape in a, in the installed version's spelling of RoPE's theta."""
    kw = dict(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
              num_key_value_heads=a.kv_heads, intermediate_size=a.ffn, vocab_size=a.vocab,
              max_position_embeddings=a.max_seq, rms_norm_eps=a.eps, tie_word_embeddings=False,
              hidden_act="silu", attention_bias=False, bos_token_id=1, eos_token_id=2)
    # transformers 5 moved rope_theta into rope_parameters; 4.x reads rope_theta.
    if hasattr(transformers.LlamaConfig(), "rope_parameters"):
        cfg = transformers.LlamaConfig(rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta}, **kw)
    else:
        cfg = transformers.LlamaConfig(rope_theta=a.rope_theta, **kw)
    # Eager attention: SDPA/flash kernels would add their own rounding to the fp16 reference.
    try:
        cfg._attn_implementation = "eager"
    except Exception:  # noqa: BLE001 (a version without the setter): set on the model below
        pass
    return cfg


def rope_buffers(torch, model):
    """The fp32 RoPE frequency buffers (inv_freq) of model, by module name."""
    return {name: mod.inv_freq.detach().clone() for name, mod in model.named_modules()
            if isinstance(getattr(mod, "inv_freq", None), torch.Tensor)}


def restore_rope(torch, model, saved):
    """Put the fp32 inv_freq buffers back after model.to(dtype), which casts them too: with fp16
    frequencies (rounded by up to 2^-11) the rotation angle at position 63 would be off by up to
    0.02 rad. transformers' own from_pretrained(dtype=float16) keeps them fp32, as llamacu does."""
    for name, mod in model.named_modules():
        if name in saved:
            mod.inv_freq = saved[name].to(mod.inv_freq.device)


def check_rope(torch, model, a):
    """The rotary frequencies transformers uses must be fp32 theta^(-2i/head_dim)."""
    hd = a.hidden // a.heads
    want = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    saved = rope_buffers(torch, model)
    if not saved:
        sys.exit("hf_logits: found no rotary inv_freq buffer")
    for name, got in saved.items():
        if got.dtype != torch.float32:
            sys.exit(f"hf_logits: {name}.inv_freq is {got.dtype}, not float32")
        err = (got.double().cpu() - want).abs().max().item()
        if err > 1e-6 * want.max().item():
            sys.exit(f"hf_logits: {name}.inv_freq differs from rope_theta={a.rope_theta}: max err {err}")


def init_weights(torch, model, seed):
    """N(0,1) embeddings, N(0, 1/fan_in) linear weights, 1 + 0.1·N(0,1) norms, from one generator
    in parameter-name order (so the weights depend on seed alone)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                v = 1 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32)
            elif name.endswith("embed_tokens.weight"):
                v = torch.randn(p.shape, generator=g, dtype=torch.float32)
            elif p.dim() == 2:
                v = torch.randn(p.shape, generator=g, dtype=torch.float32) / math.sqrt(p.shape[1])
            else:
                sys.exit(f"hf_logits: unexpected parameter {name} {tuple(p.shape)}")
            p.copy_(v.to(p.dtype))


def save_folder(model, out):
    kw = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kw["safe_serialization"] = True  # transformers 5 always writes safetensors
    model.save_pretrained(out, **kw)
    # Make config.json plain LLaMA 2 for any reader: a top-level rope_theta, no rope_scaling
    # object for the "default" (unscaled) type. transformers reads either form.
    path = os.path.join(out, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    notes = []
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling")
    if isinstance(rp, dict):
        if rp.get("rope_type", rp.get("type", "default")) != "default":
            sys.exit(f"hf_logits: unexpected rope type in {path}: {rp}")
        if "rope_theta" in rp and "rope_theta" not in cfg:
            cfg["rope_theta"] = rp["rope_theta"]
            notes.append("rope_theta copied to the top level from " + ("rope_parameters" if "rope_parameters" in cfg else "rope_scaling"))
        if isinstance(cfg.get("rope_scaling"), dict):
            cfg["rope_scaling"] = None
            notes.append("rope_scaling {rope_type: default} written as null")
    if notes:
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    return notes


def check_saved(out, a):
    from safetensors import safe_open
    path = os.path.join(out, "model.safetensors")
    if not os.path.exists(path):
        sys.exit(f"hf_logits: save_pretrained wrote no {path}: {sorted(os.listdir(out))}")
    with safe_open(path, framework="pt") as f:
        names = set(f.keys())
        dtypes = {str(f.get_tensor(n).dtype) for n in names}
    want = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for l in range(a.layers):
        for s in ("input_layernorm", "post_attention_layernorm"):
            want.add(f"model.layers.{l}.{s}.weight")
        for s in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            want.add(f"model.layers.{l}.{s}.weight")
    if names != want:
        sys.exit(f"hf_logits: {path}: unexpected tensors; missing {sorted(want - names)}, extra {sorted(names - want)}")
    return sorted(dtypes)


def write_f32(path, t):
    """t: a 2-D float32 CPU tensor, written row-major little-endian."""
    try:
        t.contiguous().numpy().astype("<f4").tofile(path)
    except (ImportError, RuntimeError):  # torch without numpy
        flat = t.contiguous().view(-1).tolist()
        with open(path, "wb") as f:
            f.write(struct.pack("<%df" % len(flat), *flat))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created; must not hold a model yet)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tokens", type=int, default=64, help="length of the token-id sequence (BOS first)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=688)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--max-seq", type=int, default=512)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (float16 on cpu may be slow or unsupported)")
    a = p.parse_args()
    if not 1 <= a.tokens <= a.max_seq:
        sys.exit(f"hf_logits: --tokens {a.tokens} must be in [1, {a.max_seq}]")
    if os.path.exists(os.path.join(a.out, "model.safetensors")) or os.path.exists(os.path.join(a.out, "config.json")):
        sys.exit(f"hf_logits: {a.out} already holds a model; choose an empty folder")

    t0 = time.perf_counter()
    import torch
    import transformers
    log(f"hf_logits: torch {torch.__version__}, transformers {transformers.__version__} ({time.perf_counter() - t0:.1f} s to import)")
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("hf_logits: no CUDA device (pass --device cpu to build the reference on the CPU)")
    # The float32 run must be real fp32: no TF32 matmuls (checked below against a float64 run).
    torch.set_float32_matmul_precision("highest")
    for mod in (torch.backends.cuda.matmul, torch.backends.cudnn):
        try:
            mod.allow_tf32 = False
        except Exception as e:  # noqa: BLE001 (newer torch may prefer its fp32_precision API)
            log(f"hf_logits: could not clear allow_tf32 on {mod.__name__}: {e}")

    cfg = make_config(transformers, a)
    torch.manual_seed(a.seed)
    model = transformers.LlamaForCausalLM(cfg)
    init_weights(torch, model, a.seed)
    check_rope(torch, model, a)
    rope = rope_buffers(torch, model)
    model = model.to(torch.float16).eval()  # the weights every run and llamacu use: fp16-rounded
    restore_rope(torch, model, rope)
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
        impl = getattr(model.config, "_attn_implementation", None)
    if impl != "eager":
        sys.exit(f"hf_logits: attention implementation is {impl!r}, not eager")
    check_rope(torch, model, a)

    os.makedirs(a.out, exist_ok=True)
    notes = save_folder(model, a.out)
    saved_dtypes = check_saved(a.out, a)
    log(f"hf_logits: saved {sorted(os.listdir(a.out))} (safetensors dtypes {saved_dtypes})")

    g = torch.Generator(device="cpu").manual_seed(a.seed + 1)
    ids = [1] + torch.randint(3, a.vocab, (a.tokens - 1,), generator=g).tolist()
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    rows = list(range(a.tokens))

    runs, logits = [], {}
    for name, dtype in (("float16", torch.float16), ("float32", torch.float32)):
        m = copy.deepcopy(model).to(device=dev, dtype=dtype).eval()
        restore_rope(torch, m, rope)
        check_rope(torch, m, a)
        t1 = time.perf_counter()
        with torch.no_grad():
            out = m(input_ids=x, use_cache=False)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t1
        lg = out.logits[0].float().cpu()  # (tokens, vocab)
        if tuple(lg.shape) != (a.tokens, a.vocab):
            sys.exit(f"hf_logits: {name}: logits shape {tuple(lg.shape)}, want {(a.tokens, a.vocab)}")
        if not torch.isfinite(lg).all():
            sys.exit(f"hf_logits: {name}: non-finite logits")
        logits[name] = lg
        fname = f"logits_{name}.f32"
        write_f32(os.path.join(a.out, fname), lg)
        runs.append({"name": name, "dtype": name, "device": str(dev), "file": fname, "shape": [len(rows), a.vocab],
                     "seconds": round(secs, 4), "max_abs": lg.abs().max().item(),
                     "rms": lg.pow(2).mean().sqrt().item()})
        del m, out
    # float64 on the CPU: not written, only a check that the float32 run was fp32 (TF32 would put
    # it ~1e-3 away) and a measure of how far each run is from exact arithmetic.
    m = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    restore_rope(torch, m, rope)
    with torch.no_grad():
        exact = m(input_ids=x.cpu(), use_cache=False).logits[0].float()
    del m
    vs64 = {name: (lg - exact).abs().max().item() for name, lg in logits.items()}
    if vs64["float32"] > 1e-3:
        sys.exit(f"hf_logits: the float32 run is {vs64['float32']:.3g} from float64: TF32 or another reduced precision was used")
    d = (logits["float16"] - logits["float32"]).abs()
    agree = (logits["float16"].argmax(-1) == logits["float32"].argmax(-1)).sum().item()
    meta = {
        "tool": "bench/reference/hf_logits.py", "seed": a.seed,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "attn_implementation": impl, "init": "embed N(0,1); linear N(0,1/fan_in); norms 1+0.1·N(0,1); rounded to fp16",
        "config": {"hidden_size": a.hidden, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
                   "num_key_value_heads": a.kv_heads, "intermediate_size": a.ffn, "vocab_size": a.vocab,
                   "max_position_embeddings": a.max_seq, "rms_norm_eps": a.eps, "rope_theta": a.rope_theta},
        "config_json_edits": notes, "safetensors_dtypes": saved_dtypes,
        "float16_vs_float32": {"max_abs": d.max().item(), "mean_abs": d.mean().item(),
                               "argmax_agree": agree, "rows": a.tokens},
        "max_abs_vs_float64_cpu": vs64,
        "commit": os.environ.get("LLAMACU_COMMIT", ""),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    ref = {"format": FORMAT, "token_ids": ids, "logit_rows": rows, "vocab": a.vocab, "runs": runs, "meta": meta}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    log(f"hf_logits: wrote {a.out}: {a.tokens} tokens × {a.vocab} logits; torch float16 vs float32: "
        f"max |Δ| {meta['float16_vs_float32']['max_abs']:.3g}, argmax agrees on {agree}/{a.tokens} rows; "
        f"max |Δ| vs float64: {vs64} "
        f"({meta['seconds']} s)")


if __name__ == "__main__":
    main()
