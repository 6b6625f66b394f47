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
  types IN OUT.json FTYPE...
                     for each llama_ftype (a number or a name: Q4_K_M, 15, ...), llama_model_quantize
                     IN into a temporary GGUF, then read that file's tensor directory: every
                     tensor's ggml type, and for the quantised ones the rms error of
                     dequantize_row_<type> of its data against IN's F32 values. Which type
                     llama.cpp gives each tensor (output.weight, attn_v, ffn_down, ...) is its
                     own rule, not the ftype's name; llamacu's quantiser is checked against it.

    bash bench/reference/ggml_fetch.sh /tmp/ggml       # the libraries (npm pack)
    python3 bench/reference/ggml_quants.py --lib /tmp/ggml vectors tensor/testdata/ggml
    go run ./bench/reference/ggufsrc -layers 8 -out /tmp/kq8-f32.gguf
    python3 bench/reference/ggml_quants.py --lib /tmp/ggml types /tmp/kq8-f32.gguf \
        loader/testdata/llama-cpp-quant-types.json Q4_0 Q8_0 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K

The test rows are chosen to reach the corners of each format: Gaussian rows, rows of one sign
(k-quants' min term), a row with outliers, a constant row, a zero row and rows with tiny values.
"""

import argparse
import array
import ctypes
import hashlib
import json
import math
import os
import random
import struct
import sys
import tempfile

ROWS, COLS = 8, 512  # 2 super-blocks of 256 per row

# ggml type ids (ggml.h enum ggml_type) and dequantize_row_* names.
TYPES = {
    "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
}

# llama.h enum llama_ftype: what llama_model_quantize is asked for (its names less "MOSTLY_").
FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9,
    "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15,
    "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "Q2_K_S": 21, "BF16": 32,
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


def library_info(libdir):
    """The prebuilt library's build record (node-llama-cpp's _nlcBuildMetadata.json), as text."""
    path = os.path.join(libdir, "_nlcBuildMetadata.json")
    return open(path).read().strip() if os.path.exists(path) else "unknown"


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
                "library": library_info(libdir)}
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


def load_llama(libdir):
    mode = getattr(os, "RTLD_GLOBAL", 0)
    for name in ("libggml-base.so", "libggml-cpu-x64.so", "libggml.v0.4.0.so"):
        ctypes.CDLL(os.path.join(libdir, name), mode=mode)
    return ctypes.CDLL(os.path.join(libdir, "libllama.v0.4.0.so"), mode=mode)


def quantize(libdir, src, dst, ftype, nthread):
    llama = load_llama(libdir)

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


# GGUF metadata value types (gguf.h enum gguf_type): struct format of the scalar ones.
GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


def read_gguf(path):
    """The header of a GGUF v2/v3 file: its metadata (arrays as their lengths) and its tensor
    directory (name, dims with the row length first, ggml type, absolute data offset)."""
    with open(path, "rb") as f:
        def take(fmt):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string():
            return f.read(take("<Q")).decode("utf-8")

        def value(vt):
            if vt in GGUF_SCALAR:
                return take(GGUF_SCALAR[vt])
            if vt == GGUF_STRING:
                return string()
            if vt == GGUF_ARRAY:
                et, n = take("<I"), take("<Q")
                for _ in range(n):
                    value(et)
                return {"array": n}
            raise ValueError("%s: GGUF value type %d" % (path, vt))

        if f.read(4) != b"GGUF":
            raise ValueError("%s: not a GGUF file" % path)
        version = take("<I")
        if version not in (2, 3):
            raise ValueError("%s: GGUF version %d" % (path, version))
        n_tensors, n_kv = take("<Q"), take("<Q")
        kv = {}
        for _ in range(n_kv):
            key = string()
            kv[key] = value(take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [take("<Q") for _ in range(take("<I"))]
            tensors.append({"name": name, "dims": dims, "type": take("<I"), "offset": take("<Q")})
        align = kv.get("general.alignment", 32)
        base = (f.tell() + align - 1) // align * align
    for t in tensors:
        t["offset"] += base
    return {"version": version, "kv": kv, "tensors": tensors}


def read_at(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        b = f.read(n)
    if len(b) != n:
        raise ValueError("%s: %d bytes at %d: file too short" % (path, n, offset))
    return b


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ftype_arg(s):
    if s.isdigit():
        n = int(s)
        names = [k for k, v in FTYPES.items() if v == n]
        if not names:
            raise argparse.ArgumentTypeError("unknown llama_ftype %d" % n)
        return names[0], n
    if s.upper() not in FTYPES:
        raise argparse.ArgumentTypeError("unknown llama_ftype %r (know %s)" % (s, " ".join(FTYPES)))
    return s.upper(), FTYPES[s.upper()]


def types(libdir, src, out, ftypes, nthread, seed):
    base, llama = load(libdir), load_llama(libdir)
    base.ggml_type_name.restype = ctypes.c_char_p
    base.ggml_type_name.argtypes = [ctypes.c_int]
    base.ggml_blck_size.restype = ctypes.c_int64
    base.ggml_blck_size.argtypes = [ctypes.c_int]
    version = {}
    for fn in ("ggml_version", "ggml_commit"):
        getattr(base, fn).restype = ctypes.c_char_p
        version[fn] = getattr(base, fn)().decode()

    # llama.cpp's log, passed on to stderr; warnings (fallbacks for rows that are not whole
    # blocks, ...) are kept for the output, with their continuation lines (GGML_LOG_LEVEL_CONT).
    log = {"warnings": [], "last": 0}
    LogCallback = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)

    def on_log(level, text, _):
        text = text.decode("utf-8", "replace")
        sys.stderr.write(text)
        if level == 5:
            level = log["last"]
            if level >= 3 and log["warnings"]:
                log["warnings"][-1] += text
                return
        log["last"] = level
        if level >= 3:  # GGML_LOG_LEVEL_WARN, _ERROR
            log["warnings"].append(text)

    callback = LogCallback(on_log)
    llama.llama_log_set.restype = None
    llama.llama_log_set.argtypes = [LogCallback, ctypes.c_void_p]
    llama.llama_log_set(callback, None)

    source = read_gguf(src)
    src_tensors = {t["name"]: t for t in source["tensors"]}
    for t in source["tensors"]:
        if t["type"] != 0:
            raise SystemExit("%s: %s is %s, not F32" % (src, t["name"], base.ggml_type_name(t["type"]).decode()))
    arch = source["kv"].get("general.architecture", "llama")
    result = {
        "format": "llamacu-llama-cpp-quant-types/1",
        "generator": "bench/reference/ggml_quants.py types (llama_model_quantize, default parameters, "
                     "no imatrix; rmse: dequantize_row_<type> against the F32 source)",
        "llama_cpp": {"library": library_info(libdir), "ggml_version": version["ggml_version"],
                      "ggml_commit": version["ggml_commit"]},
        "source": {"file": os.path.basename(src), "sha256": sha256(src),
                   "layers": source["kv"].get(arch + ".block_count"), "seed": seed},
        "ftypes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, ftype in ftypes:
            dst = os.path.join(tmp, name + ".gguf")
            log["warnings"] = []
            quantize(libdir, src, dst, ftype, nthread)
            q = read_gguf(dst)
            if q["kv"].get("general.file_type") != ftype:
                raise SystemExit("%s: general.file_type %r, asked for %d" % (name, q["kv"].get("general.file_type"), ftype))
            entry = {"ftype": ftype, "tensors": {}, "warnings": log["warnings"]}
            counts = {}
            for t in q["tensors"]:
                s = src_tensors[t["name"]]
                if s["dims"] != t["dims"]:
                    raise SystemExit("%s: %s dims %s, source %s" % (name, t["name"], t["dims"], s["dims"]))
                tname = base.ggml_type_name(t["type"]).decode().upper()
                counts[tname] = counts.get(tname, 0) + 1
                rec = {"type": tname}
                n = 1
                for d in t["dims"]:
                    n *= d
                ref = array.array("f", read_at(src, s["offset"], 4 * n))
                if sys.byteorder != "little":
                    ref.byteswap()
                if t["type"] != 0:
                    if n % base.ggml_blck_size(t["type"]) != 0:
                        raise SystemExit("%s: %s: %d elements, not whole %s blocks" % (name, t["name"], n, tname))
                    nbytes = base.ggml_row_size(t["type"], t["dims"][0]) * (n // t["dims"][0])
                    blocks = read_at(dst, t["offset"], nbytes)
                    deq = getattr(base, "dequantize_row_" + tname[:2].lower() + tname[2:])  # q4_K
                    deq.restype = None
                    deq.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int64]
                    y = (ctypes.c_float * n)()
                    deq(blocks, y, n)
                    rec["rmse"] = math.sqrt(sum((a - b) ** 2 for a, b in zip(y, ref)) / n)
                entry["tensors"][t["name"]] = rec
            result["ftypes"][name] = entry
            print("%-7s %2d  %s%s" % (name, ftype, "  ".join("%s×%d" % kv for kv in sorted(counts.items())),
                                      "  (%d warnings)" % len(entry["warnings"]) if entry["warnings"] else ""))
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


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
    t = sub.add_parser("types")
    t.add_argument("src")
    t.add_argument("out")
    t.add_argument("ftypes", nargs="+", type=ftype_arg, metavar="FTYPE")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=20261127,
                   help="the seed ggufsrc made SRC with (recorded only; kqsrc.DefaultSeed)")
    a = ap.parse_args()
    if a.cmd == "vectors":
        vectors(load(a.lib), a.out, a.lib)
    elif a.cmd == "types":
        types(a.lib, a.src, a.out, a.ftypes, a.threads, a.seed)
    else:
        quantize(a.lib, a.src, a.dst, a.ftype, a.threads)


if __name__ == "__main__":
    main()
