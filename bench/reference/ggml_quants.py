#!/usr/bin/env python3
"""Reference data from ggml itself for llamacu's GGUF quantisation types (no numpy, no torch).

llamacu reads the ggml block types that GGUF files of LLaMA 2 come in (Q4_0 … Q8_0 and the
k-quants Q2_K … Q6_K). Its decoders are checked against ggml's own, not against a reading of
ggml's source: this script loads ggml's shared libraries (libggml-base.so, libllama.so from the
npm package @node-llama-cpp/linux-x64, a prebuilt llama.cpp) with ctypes and writes

  vectors OUT        OUT/input.f32       (ROWS, COLS) little-endian float32 test rows
                     OUT/<type>.blocks   those rows quantised by ggml_quantize_chunk
                     OUT/<type>.f32      the blocks decoded by dequantize_row_<type>
                     OUT/manifest.json   rows, cols, types, library version
  quantize IN OUT FTYPE
                     llama_model_quantize(IN, OUT) with llama_ftype FTYPE (15 = Q4_K_M, ...):
                     a real mixed-type GGUF as llama.cpp's llama-quantize writes it.

    bash bench/reference/ggml_fetch.sh /tmp/ggml       # the libraries (npm pack)
    python3 bench/reference/ggml_quants.py --lib /tmp/ggml vectors tensor/testdata/ggml

The test rows are chosen to reach the corners of each format: Gaussian rows, rows of one sign
(k-quants' min term), a row with outliers, a constant row, a zero row and rows with tiny values.
"""

import argparse
import ctypes
import json
import math
import os
import random
import struct

ROWS, COLS = 8, 512  # 2 super-blocks of 256 per row

# ggml type ids (ggml.h enum ggml_type) and dequantize_row_* names.
TYPES = {
    "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
}


def load(libdir):
    mode = getattr(os, "RTLD_GLOBAL", 0)
    base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=mode)
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    base.ggml_row_size.restype = ctypes.c_size_t
    base.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return base


def test_rows(seed=20261127):
    rnd = random.Random(seed)
    rows = []
    rows.append([rnd.gauss(0, 1) for _ in range(COLS)])                 # Gaussian
    rows.append([rnd.gauss(0, 0.02) for _ in range(COLS)])              # weight-like scale
    rows.append([abs(rnd.gauss(0, 1)) + 0.5 for _ in range(COLS)])      # all positive, min > 0
    rows.append([-abs(rnd.gauss(0, 1)) for _ in range(COLS)])           # all negative
    r = [rnd.gauss(0, 0.1) for _ in range(COLS)]                        # outliers
    for i in range(0, COLS, 37):
        r[i] = rnd.choice([-1, 1]) * rnd.uniform(5, 20)
    rows.append(r)
    rows.append([0.75] * COLS)                                          # constant
    rows.append([0.0] * COLS)                                           # zero
    rows.append([rnd.uniform(-1e-4, 1e-4) for _ in range(COLS)])        # tiny values
    assert len(rows) == ROWS
    return rows


def f32bytes(xs):
    return struct.pack("<%df" % len(xs), *xs)


def vectors(lib, out, libdir):
    os.makedirs(out, exist_ok=True)
    rows = test_rows()
    flat = [x for r in rows for x in r]
    src = (ctypes.c_float * len(flat))(*flat)
    # The reference values are what ggml stores: the float32 rounding of the inputs.
    with open(os.path.join(out, "input.f32"), "wb") as f:
        f.write(bytes(src))
    manifest = {"format": "llamacu-ggml-vectors/1", "rows": ROWS, "cols": COLS, "types": {},
                "library": open(os.path.join(libdir, "_nlcBuildMetadata.json")).read().strip()
                if os.path.exists(os.path.join(libdir, "_nlcBuildMetadata.json")) else "unknown"}
    for name, tid in TYPES.items():
        row_bytes = lib.ggml_row_size(tid, COLS)
        dst = ctypes.create_string_buffer(row_bytes * ROWS)
        n = lib.ggml_quantize_chunk(tid, src, dst, 0, ROWS, COLS, None)
        assert n == row_bytes * ROWS, (name, n, row_bytes)
        deq = getattr(lib, "dequantize_row_" + name[:2].lower() + name[2:])  # q4_K
        deq.restype = None
        deq.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        y = (ctypes.c_float * (ROWS * COLS))()
        deq(dst, y, ROWS * COLS)
        with open(os.path.join(out, name.lower() + ".blocks"), "wb") as f:
            f.write(dst.raw)
        with open(os.path.join(out, name.lower() + ".f32"), "wb") as f:
            f.write(bytes(y))
        rmse = math.sqrt(sum((a - b) ** 2 for a, b in zip(flat, y)) / len(flat))
        manifest["types"][name] = {"ggml_type": tid, "row_bytes": row_bytes, "rmse": rmse}
        print("%-5s %4d bytes/row  rmse %.3g" % (name, row_bytes, rmse))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def quantize(libdir, src, dst, ftype, nthread):
    mode = getattr(os, "RTLD_GLOBAL", 0)
    for name in ("libggml-base.so", "libggml-cpu-x64.so", "libggml.v0.4.0.so"):
        ctypes.CDLL(os.path.join(libdir, name), mode=mode)
    llama = ctypes.CDLL(os.path.join(libdir, "libllama.v0.4.0.so"), mode=mode)

    # llama_model_quantize_params: int32 nthread; enum llama_ftype ftype; then fields llamacu
    # leaves at their defaults. Returned by value (an sret pointer): a roomy buffer holds it.
    class Params(ctypes.Structure):
        _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32), ("rest", ctypes.c_char * 504)]

    llama.llama_backend_init.restype = None
    llama.llama_backend_init()
    llama.llama_model_quantize_default_params.restype = Params
    p = llama.llama_model_quantize_default_params()
    p.nthread, p.ftype = nthread, ftype
    llama.llama_model_quantize.restype = ctypes.c_uint32
    llama.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Params)]
    rc = llama.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        raise SystemExit("llama_model_quantize failed: %d" % rc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", required=True, help="folder with libggml-base.so (bench/reference/ggml_fetch.sh)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vectors")
    v.add_argument("out")
    q = sub.add_parser("quantize")
    q.add_argument("src")
    q.add_argument("dst")
    q.add_argument("ftype", type=int)
    q.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "vectors":
        vectors(load(a.lib), a.out, a.lib)
    else:
        quantize(a.lib, a.src, a.dst, a.ftype, a.threads)


if __name__ == "__main__":
    main()
