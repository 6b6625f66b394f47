// harness.cpp — runs llamacu's CUDA kernels (kernels/all.cu, compiled by g++ against emu.h) on
// the CPU, driven by kernels/emu_test.go. Build:
//
//   g++ -std=c++20 -O1 -pthread -fno-strict-aliasing -ffp-contract=off -Wno-unknown-pragmas
//       -I kernels/emu -o emu kernels/emu/harness.cpp        (from the repository root)
//
// `emu --list` prints the kernel table. Otherwise it reads a script from stdin, little-endian:
//
//   'B' id:u32 n:u64 bytes[n]        (re)define device buffer id with these contents
//   'L' name:u32-len+bytes grid:3×u32 block:3×u32 nargs:u32 args…
//       arg: 'p' id:u32 offset:u64   a pointer into buffer id (byte offset); id 0 is NULL
//            'i' v:i32 | 'f' bits:u32   a 32-bit int or float
//   'R' id:u32                        write n:u64 and the buffer's bytes to stdout
//   'Q'                               exit 0
//
// and, for the emulated CUDA driver of package cuda (build tag cudaemu, cuda/emu*.go), which
// names a device address as buffer id << 40 | byte offset:
//
//   'A' id:u32 n:u64                  allocate buffer id: n bytes of 0xff (NaN in f32, f16 and
//                                     bf16), as cuMemAlloc's contents are undefined
//   'F' id:u32                        free buffer id
//   'W' id:u32 off:u64 n:u64 bytes[n] write into buffer id at off
//   'G' id:u32 off:u64 n:u64          write those n bytes of buffer id to stdout
//   'Z' id:u32 off:u64 n:u64          zero n bytes at off
//   'C' dst:u32 doff:u64 src:u32 soff:u64 n:u64   copy n bytes (ranges may overlap)
//   'K' name:u32-len+bytes grid:3×u32 block:3×u32 shared:u32 nargs:u32 (size:u8 bits:u64)…
//                                     launch with cuLaunchKernel's parameter slots: each
//                                     argument is decoded by the kernel's parameter type,
//                                     whose size it must match (pointers: 8 bytes, an address
//                                     as above; int and float: 4)
//   'S'                               write one byte (6) to stdout: all earlier work is done
//
// Any error (bad script, bad launch, fault, misaligned load, divergent barrier, deadlock) prints
// one line to stderr and exits non-zero. See emu.h for the execution model and its limits.
#include <csignal>
#include <cstdarg>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <ucontext.h>

// Fiber switches. glibc's swapcontext saves and restores the signal mask with a system call on
// every switch, which made the emulator spend most of its time in the kernel; on x86-64 a
// switch is instead the few instructions below (the callee-saved registers the SysV ABI asks a
// call to preserve, and the stack pointer). Other architectures keep ucontext.
#if defined(__x86_64__)
#define EMU_FAST_SWITCH 1
extern "C" void emu_switch(void** save_sp, void* next_sp);
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#endif
#include <unistd.h>

#include "../all.cu"
#include "selftest.h"
#undef asm
#undef volatile

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {

const char* g_kernel = "(none)";  // the kernel running, for error messages
bool g_in_kernel = false;

// ---------------------------------------------------------------- fibers

constexpr size_t kPage = 4096, kStack = 64 << 10;  // per thread, plus a guard page below
constexpr unsigned kMaxThreads = 1024;

struct Barrier {
    unsigned expected = 0, arrived = 0;
    uint64_t gen = 0;
    const char* file = nullptr;
    int line = 0;
};

struct Fiber {
#ifdef EMU_FAST_SWITCH
    void* sp = nullptr;  // saved stack pointer while suspended
#else
    ucontext_t ctx;
#endif
    bool done = false;
    const Barrier* wait = nullptr;  // blocked until wait->gen != wait_gen
    uint64_t wait_gen = 0;
};

#ifdef EMU_FAST_SWITCH
void* g_sched_sp = nullptr;
// to_sched suspends the current fiber (saving its stack pointer in *save) and resumes the scheduler.
inline void to_sched(void** save) { emu_switch(save, g_sched_sp); }
#else
ucontext_t g_sched;
#endif
Fiber g_fibers[kMaxThreads];
Fiber* g_cur = nullptr;
Barrier g_block, g_warps[kMaxThreads / 32];
uint64_t g_slots[kMaxThreads];
char* g_stacks = nullptr;
const std::function<void()>* g_body = nullptr;

void trampoline() {
    (*g_body)();
    g_cur->done = true;
    // Threads that returned no longer count for __syncthreads (as on the GPU).
    if (--g_block.expected > 0 && g_block.arrived == g_block.expected) {
        g_block.arrived = 0;
        g_block.gen++;
    }
#ifdef EMU_FAST_SWITCH
    void* dead;
    to_sched(&dead);  // never resumed
    __builtin_unreachable();
#else
    setcontext(&g_sched);
#endif
}

// run_block runs body as blockDim.x fibers until all return.
void run_block(const std::function<void()>& body) {
    const unsigned n = blockDim.x;
    g_body = &body;
    g_block = Barrier{};
    g_block.expected = n;
    for (unsigned w = 0; w < (n + 31) / 32; w++) {
        g_warps[w] = Barrier{};
        g_warps[w].expected = std::min(32u, n - 32 * w);
    }
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = g_fibers[t];
        f.done = false;
        f.wait = nullptr;
        emu::async_reset(t);
        char* stack = g_stacks + t * (kStack + kPage) + kPage;
#ifdef EMU_FAST_SWITCH
        // The first switch to the fiber pops six zero registers and "returns" into trampoline
        // with the stack aligned as at a function's entry (rsp ≡ 8 mod 16).
        void** ret = reinterpret_cast<void**>(stack + kStack - 16);
        *ret = reinterpret_cast<void*>(&trampoline);
        for (int r = 1; r <= 6; r++) ret[-r] = nullptr;
        f.sp = ret - 6;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, trampoline, 0);
#endif
    }
    // Each pass resumes the threads in a fresh pseudo-random order (seeded by the block), so that a
    // missing __syncthreads is unlikely to be hidden by a lucky fixed order.
    static unsigned order[kMaxThreads];
    for (unsigned t = 0; t < n; t++) order[t] = t;
    uint64_t rng = 0x9e3779b97f4a7c15ull * (1 + blockIdx.x + 65536ull * (blockIdx.y + 65536ull * blockIdx.z));
    auto next = [&rng] { return rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17; };
    // Warps drift apart as on a GPU: each warp of the block sits out a pass with its own
    // probability (0, 1/4 or 1/2), so one warp may run ahead of another up to the next
    // __syncthreads. Warp-collective operations (shuffles, mma, ldmatrix) are warp barriers, which
    // would otherwise keep the warps in step and hide a missing __syncthreads between one warp's
    // last read of shared memory and another's next write (or cp.async) to it.
    static unsigned lag[kMaxThreads / 32];
    const unsigned warps = (n + 31) / 32;
    static const unsigned lags[3] = {0, 1, 2};  // passes sat out of 4, on average
    for (unsigned w = 0; w < warps; w++) lag[w] = lags[next() % 3];
    static bool stalled[kMaxThreads / 32];
    for (unsigned live = n; live > 0;) {
        for (unsigned t = n - 1; t > 0; t--)  // Fisher-Yates with xorshift64
            std::swap(order[t], order[next() % (t + 1)]);
        for (unsigned w = 0; w < warps; w++) stalled[w] = next() % 4 < lag[w];
        bool progress = false, sat_out = false;
        for (unsigned k = 0; k < n; k++) {
            const unsigned t = order[k];
            Fiber& f = g_fibers[t];
            if (f.done || (f.wait && f.wait->gen == f.wait_gen)) continue;
            if (stalled[t / 32]) {
                sat_out = true;
                continue;
            }
            f.wait = nullptr;
            g_cur = &f;
            threadIdx = dim3{t, 0, 0};
#ifdef EMU_FAST_SWITCH
            emu_switch(&g_sched_sp, f.sp);
#else
            swapcontext(&g_sched, &f.ctx);
#endif
            progress = true;
            if (f.done) live--;
        }
        if (!progress && sat_out) continue;  // every runnable thread sat this pass out
        if (!progress) {
            std::string who;
            for (unsigned t = 0; t < n && who.size() < 200; t++)
                if (!g_fibers[t].done)
                    who += " " + std::to_string(t) + "@" + std::to_string(g_fibers[t].wait->line);
            emu::fail("deadlock: %u of %u threads wait at barriers that can never complete (thread@line:%s)",
                      live, n, who.c_str());
        }
    }
    g_cur = nullptr;
}

// wait_at makes the current thread arrive at b and blocks it until the phase completes.
void wait_at(Barrier& b, const char* file, int line) {
    if (b.arrived == 0) {
        b.file = file;
        b.line = line;
    } else if (b.line != line || strcmp(b.file, file) != 0) {
        emu::fail("divergent barrier: thread %u at %s:%d while others wait at %s:%d", threadIdx.x, file,
                  line, b.file, b.line);
    }
    if (++b.arrived == b.expected) {
        b.arrived = 0;
        b.gen++;
        return;
    }
    g_cur->wait = &b;
    g_cur->wait_gen = b.gen;
#ifdef EMU_FAST_SWITCH
    to_sched(&g_cur->sp);
#else
    swapcontext(&g_cur->ctx, &g_sched);
#endif
}

// ---------------------------------------------------------------- device memory

struct Buf {
    char* map = nullptr;
    size_t map_size = 0;
    char* base = nullptr;  // 16-byte aligned; base + roundup(size, 16) is a PROT_NONE page
    size_t size = 0;
};
std::map<uint32_t, Buf> g_bufs;

Buf alloc(size_t size) {
    const size_t body = (size + 15) / 16 * 16, total = (body + kPage - 1) / kPage * kPage + kPage;
    Buf b;
    b.map = (char*)mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b.map == MAP_FAILED) emu::fail("mmap of %zu bytes failed", total);
    b.map_size = total;
    if (mprotect(b.map + total - kPage, kPage, PROT_NONE) != 0) emu::fail("mprotect failed");
    b.base = b.map + total - kPage - body;
    b.size = size;
    return b;
}

// ---------------------------------------------------------------- faults

void on_fault(int sig, siginfo_t* si, void*) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "emu: %s at address %p", sig == SIGSEGV ? "SIGSEGV" : sig == SIGBUS ? "SIGBUS" : "SIGFPE", si->si_addr);
    if (g_in_kernel)
        n += snprintf(msg + n, sizeof msg - n, " in kernel %s, block (%u, %u, %u), thread %u (out-of-bounds access?)",
                      g_kernel, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x);
    msg[n++] = '\n';
    (void)!write(2, msg, n);
    _exit(3);
}

void install_fault_handler() {
    static char alt[1 << 16];
    stack_t ss{};
    ss.ss_sp = alt;
    ss.ss_size = sizeof alt;
    sigaltstack(&ss, nullptr);
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
    sigaction(SIGFPE, &sa, nullptr);
}

// ---------------------------------------------------------------- kernel table

struct Arg {
    char kind;  // 'p', 'i', 'f'; 'r': a raw parameter slot of size bytes, decoded by type
    uint32_t id = 0, bits = 0;
    uint64_t off = 0;
    uint64_t raw = 0;
    uint8_t size = 0;
};

// A device address of the emulated driver: buffer id in the high bits, byte offset in the low 40.
constexpr int kAddrShift = 40;
constexpr uint64_t kOffMask = (uint64_t(1) << kAddrShift) - 1;

// typed turns a raw slot into the kind the kernel's parameter type T wants, checking its size.
template <typename T> Arg typed(const Arg& a, size_t i) {
    if (a.kind != 'r') return a;
    Arg t;
    if (a.size != sizeof(T))
        emu::fail("%s: argument %zu: the kernel's parameter takes %zu bytes, the launch gave %u", g_kernel, i,
                  sizeof(T), a.size);
    if constexpr (std::is_pointer_v<T>) {
        t.kind = 'p', t.id = uint32_t(a.raw >> kAddrShift), t.off = a.raw & kOffMask;
    } else {
        t.kind = std::is_same_v<T, int> ? 'i' : 'f', t.bits = uint32_t(a.raw);
    }
    return t;
}

template <typename T> T arg_as(const Arg& raw, size_t i) {
    const Arg a = typed<T>(raw, i);
    if constexpr (std::is_pointer_v<T>) {
        if (a.kind != 'p') emu::fail("%s: argument %zu is a pointer, got kind '%c'", g_kernel, i, a.kind);
        if (a.id == 0) return nullptr;  // buffer 0 is NULL
        auto it = g_bufs.find(a.id);
        if (it == g_bufs.end()) emu::fail("%s: argument %zu: no buffer %u", g_kernel, i, a.id);
        if (a.off > it->second.size) emu::fail("%s: argument %zu: offset %llu past buffer %u's %zu bytes", g_kernel, i, (unsigned long long)a.off, a.id, it->second.size);
        return reinterpret_cast<T>(it->second.base + a.off);
    } else if constexpr (std::is_same_v<T, int>) {
        if (a.kind != 'i') emu::fail("%s: argument %zu is an int, got kind '%c'", g_kernel, i, a.kind);
        int v;
        memcpy(&v, &a.bits, 4);
        return v;
    } else {
        static_assert(std::is_same_v<T, float>, "kernel parameter of an unsupported type");
        if (a.kind != 'f') emu::fail("%s: argument %zu is a float, got kind '%c'", g_kernel, i, a.kind);
        float v;
        memcpy(&v, &a.bits, 4);
        return v;
    }
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
    if (block.x < 1 || block.x > kMaxThreads || block.y != 1 || block.z != 1)
        emu::fail("%s: block (%u, %u, %u): only 1-D blocks of 1…1024 threads", g_kernel, block.x, block.y, block.z);
    if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535)
        emu::fail("%s: grid (%u, %u, %u) outside CUDA's limits", g_kernel, grid.x, grid.y, grid.z);
    gridDim = grid;
    blockDim = block;
    g_in_kernel = true;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3{x, y, z};
                run_block(body);
            }
    g_in_kernel = false;
}

using Launcher = std::function<void(dim3, dim3, const std::vector<Arg>&)>;

template <typename... A> Launcher launcher(void (*f)(A...)) {
    return [f](dim3 grid, dim3 block, const std::vector<Arg>& args) {
        if (args.size() != sizeof...(A)) emu::fail("%s: %zu arguments, the kernel takes %zu", g_kernel, args.size(), sizeof...(A));
        auto tuple = [&]<size_t... I>(std::index_sequence<I...>) {
            return std::tuple<A...>(arg_as<A>(args[I], I)...);
        }(std::index_sequence_for<A...>{});
        run_grid(grid, block, [&] { std::apply(f, tuple); });
    };
}

#define GEMV(dt) X(gemv_##dt##_v1) X(gemv_##dt##_v2_n1) X(gemv_##dt##_v2_n2) X(gemv_##dt##_v2_n4) X(gemv_##dt##_v2_n8) X(gemm_##dt##_v1) \
    X(gemv_##dt##_v2_qkv_n1) X(gemv_##dt##_v2_qkv_n2) X(gemv_##dt##_v2_qkv_n4) X(gemv_##dt##_v2_qkv_n8)                        \
    X(gemv_##dt##_v2_glu_n1) X(gemv_##dt##_v2_glu_n2) X(gemv_##dt##_v2_glu_n4) X(gemv_##dt##_v2_glu_n8)                        \
    GEMV3(dt, 1) GEMV3(dt, 2) GEMV3(dt, 4) GEMV3(dt, 8) ROPE3(dt, f32) ROPE3(dt, f16)            \
    X(gemv_##dt##_v3n_glu_n1) X(gemv_##dt##_v3n_qkv_rope_f32_n1) X(gemv_##dt##_v3n_qkv_rope_f16_n1)
#define GEMV4(dt, ks) X(gemv_##dt##_v4_k##ks) X(gemv_##dt##_v4_qkv_k##ks) X(gemv_##dt##_v4_glu_k##ks) \
    X(gemv_##dt##_v4_qkv_rope_f32_k##ks) X(gemv_##dt##_v4_qkv_rope_f16_k##ks)
#define ROPE3(dt, kv) X(gemv_##dt##_v3_qkv_rope_##kv##_n1) X(gemv_##dt##_v3_qkv_rope_##kv##_n2) \
    X(gemv_##dt##_v3_qkv_rope_##kv##_n4) X(gemv_##dt##_v3_qkv_rope_##kv##_n8)
#define GEMV3(dt, nb) X(gemv_##dt##_v3_n##nb##_k1) X(gemv_##dt##_v3_n##nb##_k2) X(gemv_##dt##_v3_n##nb##_k4) \
    X(gemv_##dt##_v3_qkv_n##nb##_k1) X(gemv_##dt##_v3_qkv_n##nb##_k2) X(gemv_##dt##_v3_qkv_n##nb##_k4)          \
    X(gemv_##dt##_v3_glu_n##nb##_k1) X(gemv_##dt##_v3_glu_n##nb##_k2) X(gemv_##dt##_v3_glu_n##nb##_k4)
#define FUSEDQ(q) X(gemv_##q##_v2_qkv_n1) X(gemv_##q##_v2_qkv_n2) X(gemv_##q##_v2_qkv_n4) X(gemv_##q##_v2_qkv_n8) \
    X(gemv_##q##_v2_glu_n1) X(gemv_##q##_v2_glu_n2) X(gemv_##q##_v2_glu_n4) X(gemv_##q##_v2_glu_n8)
#define KQUANT(q) X(gemv_##q##_v1) X(gemv_##q##_v2_n1) X(gemv_##q##_v2_n2) X(gemv_##q##_v2_n4) X(gemv_##q##_v2_n8) \
    X(dequant_##q##_f16) X(embed_##q)
#define KGLU(q) X(gemv_##q##_v2_glu_n1) X(gemv_##q##_v2_glu_n2) X(gemv_##q##_v2_glu_n4) X(gemv_##q##_v2_glu_n8)
#define DECODE(kv) X(attention_decode_##kv##_g1) X(attention_decode_##kv##_g2) X(attention_decode_##kv##_g4) X(attention_decode_##kv##_g8) \
    X(attention_decode_v3_##kv##_g1) X(attention_decode_v3_##kv##_g2) X(attention_decode_v3_##kv##_g4) X(attention_decode_v3_##kv##_g8)
#define DECODE4(hd) X(attention_decode_v4_f16_hd##hd##_g1) X(attention_decode_v4_f16_hd##hd##_g2) X(attention_decode_v4_f16_hd##hd##_g4) X(attention_decode_v4_f16_hd##hd##_g8)
#define KERNELS                                                                            \
    X(embed_f32) X(embed_f16) X(embed_bf16) X(rmsnorm_f32_v1) X(rmsnorm_f32) X(add_rmsnorm_f32) X(rope_f32)    \
    X(rope_qk_store_kv_f32) X(rope_qk_store_kv_f16) X(store_kv_f32) X(store_kv_f16)         \
    X(rope_qk_store_kv_f32_from_f16) X(rope_qk_store_kv_f32_from_bf16) X(rope_qk_store_kv_f16_from_f16) X(rope_qk_store_kv_f16_from_bf16) \
    X(attention_f32_v1) X(attention_f16_v1) DECODE(f32) DECODE(f16) DECODE4(64) DECODE4(128) X(attention_decode_v5_f16_hd64) X(attention_decode_v5_f16_hd128) X(attention_reduce_f32) X(attention_reduce_f32_v2) \
    X(attention_prefill_f32) X(attention_prefill_f16) X(attention_prefill_f16_v3_hd64) X(attention_prefill_f16_v3_hd128) \
    X(attention_prefill_f16_v4_hd64) X(attention_prefill_f16_v4_hd128) GEMV(f32) GEMV(f16) GEMV(bf16)        \
    GEMV4(f16, 4) GEMV4(f16, 8) GEMV4(bf16, 4) GEMV4(bf16, 8) \
    GEMV4(q8_0, 4) GEMV4(q8_0, 8) GEMV4(q4_0, 4) GEMV4(q4_0, 8) \
    X(convert_f32_to_f16) X(convert_f32_to_bf16) X(swiglu_f32_v1) X(swiglu_f32) X(swiglu_f16) X(swiglu_bf16) \
    X(add_f32_v1) X(add_f32) X(gather_rows_f32) X(argmax_f32) X(emu_selftest_pipeline) \
    X(topk_f32_v1) X(topk_f32) X(gemv_q8_0_v1) X(gemv_q8_0_v2_n1) X(gemv_q8_0_v2_n2) X(gemv_q8_0_v2_n4)   \
    X(gemv_q8_0_v2_n8) X(dequant_q8_0_f16) X(embed_q8_0) X(gemv_q4_0_v1) X(gemv_q4_0_v2_n1)              \
    X(gemv_q4_0_v2_n2) X(gemv_q4_0_v2_n4) X(gemv_q4_0_v2_n8) X(dequant_q4_0_f16) X(embed_q4_0)              \
    FUSEDQ(q8_0) FUSEDQ(q4_0) KQUANT(q4_K) KQUANT(q5_K) KQUANT(q6_K) KGLU(q4_K) KGLU(q5_K)

const std::map<std::string, Launcher>& kernels() {
#define X(name) {#name, launcher(name)},
    static const std::map<std::string, Launcher> table = {KERNELS};
#undef X
    return table;
}

// ---------------------------------------------------------------- script

template <typename T> T rd() {
    T v;
    if (fread(&v, sizeof v, 1, stdin) != 1) emu::fail("script: unexpected end of input");
    return v;
}

// span checks that [off, off+n) lies inside buffer id and returns its address.
char* span(const char* what, uint32_t id, uint64_t off, uint64_t n) {
    auto it = g_bufs.find(id);
    if (it == g_bufs.end())
        emu::fail("%s at %#llx: not in any allocation", what, (unsigned long long)(uint64_t(id) << kAddrShift | off));
    if (off > it->second.size || n > it->second.size - off)
        emu::fail("%s of %llu bytes at offset %llu of a %zu-byte allocation: out of range", what,
                  (unsigned long long)n, (unsigned long long)off, it->second.size);
    return it->second.base + off;
}

}  // namespace

namespace emu {
void fail(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("emu: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (g_in_kernel)
        fprintf(stderr, " [kernel %s, block (%u, %u, %u), thread %u]", g_kernel, blockIdx.x, blockIdx.y,
                blockIdx.z, threadIdx.x);
    fputc('\n', stderr);
    exit(2);
}

void syncthreads(const char* file, int line) { wait_at(g_block, file, line); }

void syncwarp(const char* file, int line) {
    if (blockDim.x % 32 != 0) fail("__syncwarp in a block of %u threads (a partial warp)", blockDim.x);
    wait_at(g_warps[threadIdx.x / 32], file, line);
}

uint64_t shfl_xor(uint64_t bits, unsigned mask, int lane_mask, const char* file, int line) {
    if (mask != 0xffffffffu) fail("__shfl_xor_sync with mask %#x (only full warps are emulated)", mask);
    if (blockDim.x % 32 != 0) fail("__shfl_xor_sync in a block of %u threads (a partial warp)", blockDim.x);
    if (lane_mask < 0 || lane_mask > 31) fail("__shfl_xor_sync lane mask %d", lane_mask);
    const unsigned t = threadIdx.x;
    Barrier& w = g_warps[t / 32];
    g_slots[t] = bits;
    wait_at(w, file, line);
    const uint64_t r = g_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
    wait_at(w, file, line);  // every lane has read before any slot is reused
    return r;
}

void mma_m16n8k16(float* c, const uint32_t* a, const uint32_t* b, bool bf16, const char* file, int line) {
    struct Frag {
        uint32_t a[4], b[2];
    };
    static Frag frags[kMaxThreads];
    if (blockDim.x % 32 != 0) fail("mma.sync in a block of %u threads (a partial warp)", blockDim.x);
    const unsigned t = threadIdx.x, w0 = t & ~31u, lane = t & 31u;
    memcpy(frags[t].a, a, sizeof frags[t].a);
    memcpy(frags[t].b, b, sizeof frags[t].b);
    Barrier& w = g_warps[t / 32];
    wait_at(w, file, line);
    // PTX ISA, "Matrix Fragments for mma.m16n8k16" (f16 A/B, f32 C/D), with gid = lane / 4 and
    // tig = lane % 4: A (16 × 16, row) element (r, k) is half k%2 of register (r≥8) + 2·(k≥8)
    // of lane (r%8)·4 + (k%8)/2; B (16 × 8, col) element (k, n) is half k%2 of register (k≥8)
    // of lane n·4 + (k%8)/2; D's registers 0…3 are (gid, 2·tig), (gid, 2·tig+1), (gid+8, 2·tig),
    // (gid+8, 2·tig+1).
    auto half_at = [bf16](uint32_t reg, int k) {
        const uint16_t bits = uint16_t(k % 2 ? reg >> 16 : reg & 0xffff);
        if (bf16) {
            float f;
            const uint32_t u = uint32_t(bits) << 16;
            memcpy(&f, &u, 4);
            return f;
        }
        __half h;
        h.x = bits;
        return __half2float(h);
    };
    auto A = [&](int r, int k) {
        return half_at(frags[w0 + (r % 8) * 4 + (k % 8) / 2].a[(r >= 8) + 2 * (k >= 8)], k);
    };
    auto B = [&](int k, int n) { return half_at(frags[w0 + n * 4 + (k % 8) / 2].b[k >= 8], k); };
    const int gid = lane / 4, tig = lane % 4;
    float d[4];
    for (int i = 0; i < 4; i++) {
        const int r = gid + 8 * (i / 2), n = 2 * tig + i % 2;
        float acc = c[i];
        for (int k = 0; k < 16; k++) acc += A(r, k) * B(k, n);
        d[i] = acc;
    }
    wait_at(w, file, line);  // every lane has read the fragments before any is overwritten
    memcpy(c, d, sizeof d);
}

void ldmatrix_x4(uint32_t* r, const void* p, bool trans, const char* file, int line) {
    static const uint8_t* rows[kMaxThreads];
    if (blockDim.x % 32 != 0) fail("ldmatrix in a block of %u threads (a partial warp)", blockDim.x);
    check_align(p, 16, "ldmatrix row");
    const unsigned t = threadIdx.x, w0 = t & ~31u, lane = t & 31u;
    rows[t] = static_cast<const uint8_t*>(p);
    Barrier& w = g_warps[t / 32];
    wait_at(w, file, line);
    // PTX ISA, "Warp-level matrix load instruction: ldmatrix": lanes 8m … 8m+7 address the rows
    // of matrix m; lane l receives, of each matrix, elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1),
    // or with .trans elements (2(l%4), l/4) and (2(l%4)+1, l/4) — the lower one in the low half.
    uint32_t out[4];
    for (unsigned m = 0; m < 4; m++) {
        if (!trans) {
            memcpy(&out[m], rows[w0 + 8 * m + lane / 4] + 4 * (lane % 4), 4);
        } else {
            uint16_t lo, hi;
            memcpy(&lo, rows[w0 + 8 * m + 2 * (lane % 4)] + 2 * (lane / 4), 2);
            memcpy(&hi, rows[w0 + 8 * m + 2 * (lane % 4) + 1] + 2 * (lane / 4), 2);
            out[m] = lo | (uint32_t)hi << 16;
        }
    }
    wait_at(w, file, line);  // every lane has read before any address slot is reused
    memcpy(r, out, sizeof out);
}

// The cp.async queue of each thread: copies (with the source bytes read at issue) by group.
struct AsyncCopy {
    uint8_t* dst;
    uint8_t data[16];
    unsigned group;
};
static std::vector<AsyncCopy> g_async[kMaxThreads];
static unsigned g_async_group[kMaxThreads];  // the open (uncommitted) group's number

void async_reset(unsigned t) {
    g_async[t].clear();
    g_async_group[t] = 0;
}

// lands_early decides, for thread t's copy group g in the current block, whether its copies land
// when they are issued (true) or when the thread waits for the group (false): a hash, so that a
// run is deterministic, and different groups of one kernel take both sides. On a GPU a copy may
// land at any time in between. Landing late finds a read of a stage before its wait (or without
// the barrier after it); landing early finds a copy into a stage that other threads may still be
// reading (no barrier between their last read and the copy). $LLAMACU_EMU_CPASYNC=late or
// =early forces one side for every group.
static bool lands_early(unsigned t, unsigned g) {
    static const int mode = [] {
        const char* m = getenv("LLAMACU_EMU_CPASYNC");
        if (m == nullptr || *m == 0 || strcmp(m, "mixed") == 0) return 0;
        if (strcmp(m, "late") == 0) return 1;
        if (strcmp(m, "early") == 0) return 2;
        fail("LLAMACU_EMU_CPASYNC=%s: want mixed, late or early", m);
        return 0;
    }();
    if (mode != 0) return mode == 2;
    uint64_t h = ((uint64_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    h = h * 0x9E3779B97F4A7C15ull ^ ((uint64_t)t << 32 | g);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    return h & 1;
}

void cp_async16(void* dst, const void* src, bool valid) {
    check_align(dst, 16, "cp.async shared destination");
    AsyncCopy c{static_cast<uint8_t*>(dst), {}, g_async_group[threadIdx.x]};
    if (valid) {
        check_align(src, 16, "cp.async global source");
        memcpy(c.data, src, 16);
    }
    if (lands_early(threadIdx.x, c.group)) {
        memcpy(c.dst, c.data, 16);
        return;
    }
    g_async[threadIdx.x].push_back(c);
}

void cp_async_commit() { g_async_group[threadIdx.x]++; }

void cp_async_wait(int n) {
    const unsigned t = threadIdx.x;
    // Groups < committed − n are complete; later ones (and the open one) stay in flight.
    const long done = (long)g_async_group[t] - n;
    auto& q = g_async[t];
    size_t keep = 0;
    for (auto& c : q) {
        if ((long)c.group < done)
            memcpy(c.dst, c.data, 16);
        else
            q[keep++] = c;
    }
    q.resize(keep);
}
}  // namespace emu

int main(int argc, char** argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (auto& [name, _] : kernels()) printf("%s\n", name.c_str());
        return 0;
    }
    install_fault_handler();
    g_stacks = (char*)mmap(nullptr, kMaxThreads * (kStack + kPage), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_stacks == MAP_FAILED) emu::fail("cannot map thread stacks");
    for (unsigned t = 0; t < kMaxThreads; t++) mprotect(g_stacks + t * (kStack + kPage), kPage, PROT_NONE);

    std::string name;
    for (;;) {
        const char op = rd<char>();
        if (op == 'Q') return 0;
        if (op == 'B') {
            const uint32_t id = rd<uint32_t>();
            if (id == 0) emu::fail("script: buffer 0 is NULL");
            const uint64_t n = rd<uint64_t>();
            if (auto it = g_bufs.find(id); it != g_bufs.end()) munmap(it->second.map, it->second.map_size);
            Buf b = alloc(n);
            if (n && fread(b.base, 1, n, stdin) != n) emu::fail("script: buffer %u truncated", id);
            g_bufs[id] = b;
        } else if (op == 'R') {
            const uint32_t id = rd<uint32_t>();
            auto it = g_bufs.find(id);
            if (it == g_bufs.end()) emu::fail("script: read of unknown buffer %u", id);
            const uint64_t n = it->second.size;
            fwrite(&n, sizeof n, 1, stdout);
            fwrite(it->second.base, 1, n, stdout);
        } else if (op == 'L') {
            name.resize(rd<uint32_t>());
            if (fread(name.data(), 1, name.size(), stdin) != name.size()) emu::fail("script: truncated name");
            dim3 grid, block;
            grid.x = rd<uint32_t>(), grid.y = rd<uint32_t>(), grid.z = rd<uint32_t>();
            block.x = rd<uint32_t>(), block.y = rd<uint32_t>(), block.z = rd<uint32_t>();
            std::vector<Arg> args(rd<uint32_t>());
            for (Arg& a : args) {
                a.kind = rd<char>();
                if (a.kind == 'p') a.id = rd<uint32_t>(), a.off = rd<uint64_t>();
                else if (a.kind == 'i' || a.kind == 'f') a.bits = rd<uint32_t>();
                else emu::fail("script: argument kind '%c'", a.kind);
            }
            auto it = kernels().find(name);
            if (it == kernels().end()) emu::fail("script: no kernel %s", name.c_str());
            g_kernel = it->first.c_str();
            it->second(grid, block, args);
            g_kernel = "(none)";
        } else if (op == 'A') {
            const uint32_t id = rd<uint32_t>();
            const uint64_t n = rd<uint64_t>();
            if (id == 0 || g_bufs.count(id)) emu::fail("script: allocation of buffer %u, which exists", id);
            Buf b = alloc(n);
            memset(b.base, 0xff, n);
            g_bufs[id] = b;
        } else if (op == 'F') {
            const uint32_t id = rd<uint32_t>();
            auto it = g_bufs.find(id);
            if (it == g_bufs.end()) emu::fail("cuMemFree of %#llx: not an allocation", (unsigned long long)id << kAddrShift);
            munmap(it->second.map, it->second.map_size);
            g_bufs.erase(it);
        } else if (op == 'W' || op == 'G' || op == 'Z') {
            const uint32_t id = rd<uint32_t>();
            const uint64_t off = rd<uint64_t>(), n = rd<uint64_t>();
            char* p = span(op == 'W' ? "cuMemcpyHtoD" : op == 'G' ? "cuMemcpyDtoH" : "cuMemsetD8", id, off, n);
            if (op == 'W') {
                if (n && fread(p, 1, n, stdin) != n) emu::fail("script: write to buffer %u truncated", id);
            } else if (op == 'G') {
                fwrite(p, 1, n, stdout);
                fflush(stdout);
            } else {
                memset(p, 0, n);
            }
        } else if (op == 'C') {
            const uint32_t did = rd<uint32_t>();
            const uint64_t doff = rd<uint64_t>();
            const uint32_t sid = rd<uint32_t>();
            const uint64_t soff = rd<uint64_t>(), n = rd<uint64_t>();
            char* d = span("cuMemcpyDtoD destination", did, doff, n);
            char* s = span("cuMemcpyDtoD source", sid, soff, n);
            memmove(d, s, n);
        } else if (op == 'S') {
            fputc(6, stdout);
            fflush(stdout);
        } else if (op == 'K') {
            name.resize(rd<uint32_t>());
            if (fread(name.data(), 1, name.size(), stdin) != name.size()) emu::fail("script: truncated name");
            dim3 grid, block;
            grid.x = rd<uint32_t>(), grid.y = rd<uint32_t>(), grid.z = rd<uint32_t>();
            block.x = rd<uint32_t>(), block.y = rd<uint32_t>(), block.z = rd<uint32_t>();
            const uint32_t shared = rd<uint32_t>();
            std::vector<Arg> args(rd<uint32_t>());
            for (Arg& a : args) a.kind = 'r', a.size = rd<uint8_t>(), a.raw = rd<uint64_t>();
            auto it = kernels().find(name);
            if (it == kernels().end()) emu::fail("launch: no kernel %s", name.c_str());
            if (shared != 0) emu::fail("launch %s: %u bytes of dynamic shared memory (no kernel declares any)", name.c_str(), shared);
            g_kernel = it->first.c_str();
            it->second(grid, block, args);
            g_kernel = "(none)";
        } else {
            emu::fail("script: unknown op '%c' (%d)", op, op);
        }
    }
}
