// The forward and backward passes of the fused LSTM layer (lstm_jax/_src/fused.py), and
// of the GRU and RNN layers (fused_gru_rnn.py, see "GRU and RNN" below), as XLA FFI
// handlers for x86-64 CPUs with AVX-512 or AVX2 and FMA, float32.
//
// Why native: inside an XLA while loop every step pays a dispatch per kernel, and
// XLA's per-step product ran at ~125 GFLOP/s on our 2-core benchmark machine. Here each
// call packs its weights once for a register-blocked SIMD product (~180-200 GFLOP/s
// there) and applies the gate math to each product tile while it is still in cache.
//
// Shapes (row-major; D directions, T steps, B batch, I input, H hidden; gates in torch
// order i, f, g, o, each a block of H columns):
//   LstmForward(x [D,T,B,I], w_ih [D,4H,I], bias [D,4H], w_hh [D,4H,H], h0 [D,B,H],
//               c0 [D,B,H], valid [D,T,B] or [0], peep [D,3,H] or [0])
//     -> y [D,T,B,H], h_T [D,B,H], c_T [D,B,H], acts [D,T,B,4H] or [0], cs [D,T,B,H] or [0]
//   LstmBackward(acts, cs, c0, dy [D,T,B,H], dh_T, dc_T, w_hh, w_ih, x, h_prev [D,T,B,H],
//                valid, peep) -> dx [D,T,B,I], [dW_ih, dW_hh]^T [D,I+H,4H], dbias [D,4H],
//                dh0, dc0, dpeep [D,3,H] or [0]
// peep holds the peephole weights (w_ci, w_cf, w_co): i and f see c_{t-1}, o sees c_t,
// i = s(z_i + w_ci * c_{t-1}), f likewise, o = s(z_o + w_co * c_t); [0] for none.
// The semantics, masking included, are those of fused.py's XLA loops for finite values;
// NaN and inf propagate as through autodiff of the plain scan (scan.py): no clamp or
// select drops a NaN, and a padded step, which keeps the state, still adds its own
// gradient (zero unless its activations are NaN) to the one it passes back.
//
// Work split in the loops: the hidden units of all directions are cut into blocks of 32
// units (a direction's last block partial where H is not a multiple of 32); each thread
// owns a range of blocks for the whole call, so it reads only its own part of the packed
// weights and keeps its own part of the cell state. One barrier per step publishes the
// new h (forward) or dz (backward) that every block's product reads. At the end of each
// chunk of steps the backward call splits that chunk's input and weight gradients between
// the threads by rows, evenly (the units' split leaves one block's worth of imbalance).
// The threads of a call (the max_threads attribute bounds them) are the caller and workers
// kept from call to call, one per CPU, that sleep when idle (see Worker).

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unistd.h>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kBlock = 32;  // hidden units per work block, columns per product tile

// ---------------------------------------------------------------- vector layer
// The kernels are written once against Vec, a register of kLanes floats: AVX-512 (16)
// where the compiler targets it, else AVX2 with FMA (8).
// The arithmetic both instruction sets name alike (prefix _mm512 or _mm256).
#define LSTM_JAX_ARITHMETIC(P)                                                             \
  inline Vec Load(const float* p) { return P##_loadu_ps(p); }                             \
  inline void Store(float* p, Vec v) { P##_storeu_ps(p, v); }                             \
  inline Vec Set1(float x) { return P##_set1_ps(x); }                                     \
  inline Vec Add(Vec a, Vec b) { return P##_add_ps(a, b); }                               \
  inline Vec Sub(Vec a, Vec b) { return P##_sub_ps(a, b); }                               \
  inline Vec Mul(Vec a, Vec b) { return P##_mul_ps(a, b); }                               \
  inline Vec Div(Vec a, Vec b) { return P##_div_ps(a, b); }                               \
  inline Vec Min(Vec a, Vec b) { return P##_min_ps(a, b); }                               \
  inline Vec Max(Vec a, Vec b) { return P##_max_ps(a, b); }                               \
  inline Vec Fma(Vec a, Vec b, Vec c) { return P##_fmadd_ps(a, b, c); }   /* a * b + c */ \
  inline Vec Fnma(Vec a, Vec b, Vec c) { return P##_fnmadd_ps(a, b, c); } /* c - a * b */

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
constexpr int kRows = 8;  // batch rows per product tile: 16 accumulators of 32 registers
LSTM_JAX_ARITHMETIC(_mm512)
inline Vec Round(Vec x) {
  return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline Vec Abs(Vec x) { return _mm512_abs_ps(x); }
inline __m512i Bits(Vec x) { return _mm512_castps_si512(x); }
inline Vec Pow2(Vec n) {  // 2^n for integral n in [-126, 127]
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline Vec CopySign(Vec magnitude, Vec sign) {
  return _mm512_castsi512_ps(_mm512_or_si512(
      Bits(magnitude), _mm512_and_si512(Bits(sign), _mm512_set1_epi32(INT32_MIN))));
}
inline Vec SelectLess(Vec a, float limit, Vec if_less, Vec otherwise) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, Set1(limit), _CMP_LT_OQ), otherwise,
                              if_less);
}
inline __mmask16 FirstLanes(int n) { return static_cast<__mmask16>((1u << std::max(n, 0)) - 1); }
inline Vec MaskedLoad(const float* p, int n) { return _mm512_maskz_loadu_ps(FirstLanes(n), p); }
inline void MaskedStore(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, FirstLanes(n), v); }
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
constexpr int kRows = 6;  // batch rows per product tile: 12 accumulators of 16 registers
LSTM_JAX_ARITHMETIC(_mm256)
inline Vec Round(Vec x) {
  return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
inline Vec Abs(Vec x) { return _mm256_andnot_ps(Set1(-0.0f), x); }
inline Vec Pow2(Vec n) {  // 2^n for integral n in [-126, 127]
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline Vec CopySign(Vec magnitude, Vec sign) {
  return _mm256_or_ps(magnitude, _mm256_and_ps(sign, Set1(-0.0f)));
}
inline Vec SelectLess(Vec a, float limit, Vec if_less, Vec otherwise) {
  return _mm256_blendv_ps(otherwise, if_less, _mm256_cmp_ps(a, Set1(limit), _CMP_LT_OQ));
}
inline __m256i FirstLanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec MaskedLoad(const float* p, int n) { return _mm256_maskload_ps(p, FirstLanes(n)); }
inline void MaskedStore(float* p, Vec v, int n) { _mm256_maskstore_ps(p, FirstLanes(n), v); }
#else
#error "lstm_cpu.cc needs AVX-512, or AVX2 with FMA"
#endif
#undef LSTM_JAX_ARITHMETIC
inline Vec Zero() { return Set1(0.0f); }
// The first n lanes at p (zeros above them), for the last units of a partial block:
// masked lanes are neither read nor written, so nothing past a row or a buffer is touched.
inline Vec LoadN(const float* p, int64_t n) {
  return n >= kLanes ? Load(p) : MaskedLoad(p, static_cast<int>(n));
}
inline void StoreN(float* p, Vec v, int64_t n) {
  if (n >= kLanes) Store(p, v);
  else MaskedStore(p, v, static_cast<int>(n));
}
constexpr int kVecs = kBlock / kLanes;  // registers per row of a block

// ---------------------------------------------------------------- gate functions
inline Vec Exp(Vec x) {
  // e^x = 2^n * e^r, |r| <= ln2/2, e^r by its Taylor series to r^7 (error < 1e-8). The
  // clamp keeps 2^n a normal float below x ~ 88.4 and makes it 2^128 = inf above, so
  // that e^inf = inf and sigmoid(-inf) = 0 exactly (sigmoid and tanh saturate well
  // inside it). Min and max return their second operand when either is NaN: x goes
  // second, so NaN passes through.
  x = Min(Set1(89.0f), Max(Set1(-87.3f), x));
  Vec n = Round(Mul(x, Set1(1.44269504088896341f)));
  Vec r = Fnma(n, Set1(0.693145751953125f), x);
  r = Fnma(n, Set1(1.428606765330187045e-06f), r);
  Vec p = Set1(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = Fma(p, r, Set1(c));
  return Mul(p, Pow2(n));
}

inline Vec Sigmoid(Vec x) {
  const Vec one = Set1(1.0f);
  return Div(one, Add(one, Exp(Sub(Zero(), x))));
}

inline Vec Tanh(Vec x) {
  // |x| < 0.55: odd Taylor series to x^19 (no cancellation near 0); otherwise
  // 1 - 2 / (e^{2|x|} + 1). The sign is restored at the end.
  const Vec one = Set1(1.0f);
  Vec a = Abs(x), a2 = Mul(a, a);
  Vec p = Set1(-443861162.0f / 1856156927625.0f);
  for (float c : {6404582.0f / 10854718875.0f, -929569.0f / 638512875.0f,
                  21844.0f / 6081075.0f, -1382.0f / 155925.0f, 62.0f / 2835.0f,
                  -17.0f / 315.0f, 2.0f / 15.0f, -1.0f / 3.0f})
    p = Fma(p, a2, Set1(c));
  Vec small = Fma(Mul(p, a2), a, a);
  Vec large = Sub(one, Div(Set1(2.0f), Add(Exp(Add(a, a)), one)));
  return CopySign(SelectLess(a, 0.55f, small, large), x);
}

// ---------------------------------------------------------------- the product
// C[rows, 32] (+)= A[rows, K] @ B[K, 32]: A's element (r, k) at a[r * a_row + k * a_k],
// B's row k at b + k * ldb (a packed panel has ldb = 32), C's row r at c + r * ldc.
// Columns go in passes of two registers (one pass with AVX-512, two with AVX2).
template <int R>
inline void Tile(const float* a, int64_t a_row, int64_t a_k, const float* b, int64_t ldb,
                 int64_t k_size, float* c, int64_t ldc, bool accumulate) {
  for (int col = 0; col < kBlock; col += 2 * kLanes) {
    const float* bc = b + col;
    float* cc = c + col;
    Vec acc0[R], acc1[R];
    for (int r = 0; r < R; ++r) {
      acc0[r] = accumulate ? Load(cc + r * ldc) : Zero();
      acc1[r] = accumulate ? Load(cc + r * ldc + kLanes) : Zero();
    }
    int64_t k = 0;
    if constexpr (R <= 2) {
      // Few rows: a second set of accumulators for odd k, so that more than 2R
      // dependent chains of FMAs (4 cycles each) are in flight.
      Vec odd0[R], odd1[R];
      for (int r = 0; r < R; ++r) odd0[r] = odd1[r] = Zero();
      for (; k + 1 < k_size; k += 2) {
        Vec b0 = Load(bc + k * ldb), b1 = Load(bc + k * ldb + kLanes);
        Vec c0 = Load(bc + (k + 1) * ldb), c1 = Load(bc + (k + 1) * ldb + kLanes);
        for (int r = 0; r < R; ++r) {
          Vec v = Set1(a[r * a_row + k * a_k]), w = Set1(a[r * a_row + (k + 1) * a_k]);
          acc0[r] = Fma(v, b0, acc0[r]);
          acc1[r] = Fma(v, b1, acc1[r]);
          odd0[r] = Fma(w, c0, odd0[r]);
          odd1[r] = Fma(w, c1, odd1[r]);
        }
      }
      for (int r = 0; r < R; ++r) {
        acc0[r] = Add(acc0[r], odd0[r]);
        acc1[r] = Add(acc1[r], odd1[r]);
      }
    }
    for (; k < k_size; ++k) {
      Vec b0 = Load(bc + k * ldb), b1 = Load(bc + k * ldb + kLanes);
      for (int r = 0; r < R; ++r) {
        Vec v = Set1(a[r * a_row + k * a_k]);
        acc0[r] = Fma(v, b0, acc0[r]);
        acc1[r] = Fma(v, b1, acc1[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      Store(cc + r * ldc, acc0[r]);
      Store(cc + r * ldc + kLanes, acc1[r]);
    }
  }
}

void TileRows(int rows, const float* a, int64_t a_row, int64_t a_k, const float* b,
              int64_t ldb, int64_t k_size, float* c, int64_t ldc, bool accumulate = false) {
  switch (rows) {
#define LSTM_JAX_TILE_CASE(R) \
  case R:                     \
    return Tile<R>(a, a_row, a_k, b, ldb, k_size, c, ldc, accumulate);
    LSTM_JAX_TILE_CASE(8)
    LSTM_JAX_TILE_CASE(7)
    LSTM_JAX_TILE_CASE(6)
    LSTM_JAX_TILE_CASE(5)
    LSTM_JAX_TILE_CASE(4)
    LSTM_JAX_TILE_CASE(3)
    LSTM_JAX_TILE_CASE(2)
#undef LSTM_JAX_TILE_CASE
    default:
      return Tile<1>(a, a_row, a_k, b, ldb, k_size, c, ldc, accumulate);
  }
}

// Packs columns col0 .. col0 + cols of `rows` rows (row k starts at row_at(k)) into a
// panel of 32 columns, zero-padded, for TileRows.
template <class RowAt>
void PackColumns(float* panel, int64_t rows, RowAt row_at, int64_t col0, int64_t cols) {
  for (int64_t k = 0; k < rows; ++k) {
    std::memcpy(panel + k * kBlock, row_at(k) + col0, cols * sizeof(float));
    std::fill(panel + k * kBlock + cols, panel + (k + 1) * kBlock, 0.0f);
  }
}

// The input gradient of a chunk of rows_k rows, dx[m] = dz[m, :G] @ W_ih (dz's rows
// ldz apart; W_ih as in_panels panels of G rows, zero-padded past I), this thread's
// share of the row tiles.
void ChunkInputGradient(const float* dz, int64_t ldz, const float* panels, int64_t in_panels,
                        int64_t G, int64_t I, int64_t rows_k, float* dx, float* tile, int tid,
                        int nt) {
  const int64_t tiles = (rows_k + kRows - 1) / kRows;
  for (int64_t tl = tiles * tid / nt; tl < tiles * (tid + 1) / nt; ++tl) {
    const int64_t m = tl * kRows;
    const int rows = static_cast<int>(std::min<int64_t>(kRows, rows_k - m));
    for (int64_t p = 0; p < in_panels; ++p) {
      const int64_t col = p * kBlock, cols = std::min<int64_t>(kBlock, I - col);
      const float* panel = panels + p * G * kBlock;
      if (cols == kBlock) {
        TileRows(rows, dz + m * ldz, ldz, 1, panel, kBlock, G, dx + m * I + col, I);
        continue;
      }
      TileRows(rows, dz + m * ldz, ldz, 1, panel, kBlock, G, tile, kBlock);
      for (int r = 0; r < rows; ++r)
        std::memcpy(dx + (m + r) * I + col, tile + r * kBlock, cols * sizeof(float));
    }
  }
}

// One block's gate gradients over a chunk: `units` columns of rows_k rows (row k at
// src + k * ld) into b_packed [rows_k][32], zero past `units`; with `db`, their column
// sums stored there (added to it when `accumulate`).
void PackGateGradients(const float* src, int64_t ld, int64_t rows_k, int64_t units,
                       float* b_packed, float* db, bool accumulate) {
  for (int64_t k = 0; k < rows_k; ++k)
    for (int v = 0; v < kVecs; ++v)
      Store(b_packed + k * kBlock + v * kLanes,
            LoadN(src + k * ld + v * kLanes, units - v * kLanes));
  for (int v = 0; db && v < kVecs; ++v) {
    Vec sum = accumulate ? LoadN(db + v * kLanes, units - v * kLanes) : Zero();
    for (int64_t k = 0; k < rows_k; ++k) sum = Add(sum, Load(b_packed + k * kBlock + v * kLanes));
    StoreN(db + v * kLanes, sum, units - v * kLanes);
  }
}

// dw[rows][units] (row r at dw + r * ldw) = a^T b_packed over rows_k (added to it when
// `accumulate`): a, a tile of kRows inputs over the chunk's rows; b_packed from
// PackGateGradients. A partial block goes through `tile`: its 32 columns would reach into
// the next gate's.
void WeightGradientTile(int rows, const float* a, const float* b_packed, int64_t rows_k,
                        float* dw, int64_t ldw, int64_t units, bool accumulate, float* tile) {
  if (units == kBlock) {
    TileRows(rows, a, 1, kRows, b_packed, kBlock, rows_k, dw, ldw, accumulate);
    return;
  }
  for (int r = 0; accumulate && r < rows; ++r)
    std::memcpy(tile + r * kBlock, dw + r * ldw, units * sizeof(float));
  TileRows(rows, a, 1, kRows, b_packed, kBlock, rows_k, tile, kBlock, accumulate);
  for (int r = 0; r < rows; ++r)
    std::memcpy(dw + r * ldw, tile + r * kBlock, units * sizeof(float));
}

template <class Buffer>
int64_t Count(const Buffer& buffer) {
  return static_cast<int64_t>(buffer.element_count());
}

struct Dims {
  int64_t d, t, b, h;
};

int64_t BlocksPerDirection(int64_t h) { return (h + kBlock - 1) / kBlock; }

// One core's L2 cache in bytes (1 MiB where the system does not say).
int64_t L2Bytes() {
  static const int64_t bytes = [] {
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return reported > 0 ? static_cast<int64_t>(reported) : int64_t{1} << 20;
  }();
  return bytes;
}

// Threads for a call: one when a step's product is too small to repay a barrier per
// step and the weights a step reads stay in one core's L2, otherwise up to
// `max_threads`, at most one per block. Weights beyond one L2 would stream from L3 at
// every step; split between threads, each part can stay in its core's own L2 (batch 1,
// I = H = 256, 2 MB of weights: 2x on two threads; experiments/benchmarks/RESULTS.md).
int ThreadCount(int64_t blocks, double flops_per_step, int64_t step_weight_bytes,
                int64_t max_threads) {
  if (flops_per_step < 2.0e6 && step_weight_bytes * 2 <= L2Bytes()) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min(max_threads, blocks)));
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A barrier for the threads of one call. It spins, since a step lasts microseconds,
// and yields the core after a while so that it cannot starve other work; it adds up the
// time its threads waited past their spins (see SharedCpus).
class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads) {}
  void Wait() {
    if (threads_ == 1) return;
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    int64_t since = 0;
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < 256) {
        _mm_pause();
        continue;
      }
      if (spins == 256) since = NowNs();
      std::this_thread::yield();
    }
    if (since) stalled_ns_.fetch_add(NowNs() - since, std::memory_order_relaxed);
  }
  int64_t StalledNs() const { return stalled_ns_.load(std::memory_order_relaxed); }

 private:
  const int threads_;
  std::atomic<int> arrived_{0}, generation_{0};
  std::atomic<int64_t> stalled_ns_{0};
};

// CPUs shared with other busy work (another training process, a second notebook): the
// scheduler takes a member of the team off its CPU for a time slice (milliseconds) while
// the others wait for it at the barrier of every step (microseconds). A one-layer LSTM's
// training step (T 35, B 20, H 200) beside two busy processes on 2 cores took 268-272 ms
// on a team of 2 against 19-36 ms on the caller alone. So a call whose threads spent
// more than half their time waiting past the barrier's spins makes the calls of the next
// quarter second run on the caller alone (doubled while it recurs, up to 8 s); then a
// call tries the team again. (A tenth, tried first, also caught the waits of a quiet
// machine, such as a sleeping worker's wake-up.) Results do not depend on the team's
// size. A fixed team (LSTM_JAX_NATIVE_THREADS set) is never cut.
class SharedCpus {
 public:
  // The team a call may use: `threads`, or 1 while the CPUs are found shared.
  static int Team(int threads, bool fixed) {
    return fixed || NowNs() >= alone_until_ns_ ? threads : 1;
  }
  // Records a call of `team` threads that took `elapsed_ns`; callers hold CallMutex.
  static void Record(int team, int64_t elapsed_ns, int64_t stalled_ns, bool fixed) {
    last_team_.store(team, std::memory_order_relaxed);
    if (team == 1 || fixed) return;
    if (stalled_ns * 2 > elapsed_ns * team) {
      alone_until_ns_ = NowNs() + backoff_ns_;
      backoff_ns_ = std::min<int64_t>(2 * backoff_ns_, kLongestNs);
    } else {
      backoff_ns_ = kFirstNs;
    }
  }
  static int LastTeam() { return last_team_.load(std::memory_order_relaxed); }

 private:
  static constexpr int64_t kFirstNs = 250'000'000, kLongestNs = 8'000'000'000;
  static inline int64_t alone_until_ns_ = 0, backoff_ns_ = kFirstNs;
  static inline std::atomic<int> last_team_{0};
};

// The team of a call: the caller and workers kept from call to call, each worker pinned
// to one CPU and the caller held on the CPU it is on for the call, so that no two of
// them share a core. Threads started per call began on their parent's CPU and were moved
// away late: half the calls ran at one core's speed, and a start cost 0.5-1 ms (measured
// at T 35, B 20, H 200 on 2 cores). Idle workers spin for 50 us (the next layer's call
// may follow within microseconds), then sleep on a condition variable, so none spins beside
// XLA's or torch's threads between steps.
class Worker {
 public:
  // A worker pinned to `cpu`, or nullptr where the thread cannot start (address-space,
  // process or container limits) or cannot be pinned.
  static Worker* Start(int cpu) {
    auto* worker = new Worker;
    try {
      worker->thread_ = std::thread([worker] { worker->Loop(); });
    } catch (const std::exception&) {  // std::system_error (EAGAIN) or std::bad_alloc
      delete worker;
      return nullptr;
    }
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    const pthread_t handle = worker->thread_.native_handle();
    worker->thread_.detach();  // kept for the process's life
    pthread_setname_np(handle, "lstm_jax_native");  // as tools such as top -H show it
    if (pthread_setaffinity_np(handle, sizeof(one), &one) != 0) {
      worker->Post(nullptr);  // it ends; the object is left to it
      return nullptr;
    }
    return worker;
  }
  // Runs job() on the worker; Wait() returns once it has.
  void Post(const std::function<void()>* job) {
    {
      std::lock_guard<std::mutex> hold(mutex_);
      job_ = job;
      posted_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_one();
  }
  void Wait() const {
    for (int spins = 0; done_.load(std::memory_order_acquire) != posted_.load(); ++spins)
      if (spins < 4096) _mm_pause();
      else std::this_thread::yield();
  }

 private:
  void Loop() {
    for (uint64_t seen = 0;; ++seen) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      for (int spins = 1; posted_.load(std::memory_order_acquire) == seen; ++spins) {
        _mm_pause();
        if (spins % 64 == 0 && std::chrono::steady_clock::now() > until) break;
      }
      std::unique_lock<std::mutex> hold(mutex_);
      wake_.wait(hold, [&] { return posted_.load(std::memory_order_acquire) != seen; });
      const std::function<void()>* job = job_;
      hold.unlock();
      if (!job) return;
      (*job)();
      done_.store(seen + 1, std::memory_order_release);
    }
  }
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const std::function<void()>* job_ = nullptr;
  std::atomic<uint64_t> posted_{0}, done_{0};
};

// The worker of each CPU, started at its first use (once: a CPU whose worker could not
// start or be pinned gets none); a forked child starts its own.
Worker* WorkerOn(int cpu) {
  static pid_t owner = 0;
  static std::vector<Worker*> workers;
  static std::vector<bool> tried;
  if (owner != getpid()) {  // the parent's workers did not survive the fork
    workers.assign(CPU_SETSIZE, nullptr);
    tried.assign(CPU_SETSIZE, false);
    owner = getpid();
  }
  if (!tried[cpu]) workers[cpu] = Worker::Start(cpu), tried[cpu] = true;
  return workers[cpu];
}

// Holds the calling thread on the CPU it is on, and gives its affinity back at the end.
class CallerPlacement {
 public:
  CallerPlacement() {
    if (pthread_getaffinity_np(pthread_self(), sizeof(allowed_), &allowed_) != 0) return;
    here_ = sched_getcpu();
    if (here_ < 0 || !CPU_ISSET(here_, &allowed_)) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(here_, &one);
    held_ = pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0;
  }
  ~CallerPlacement() {
    if (held_) pthread_setaffinity_np(pthread_self(), sizeof(allowed_), &allowed_);
  }
  // The other CPUs the caller may run on, at most `n` of them; none unless it is held.
  std::vector<int> OtherCpus(int n) const {
    std::vector<int> cpus;
    for (int cpu = 0; held_ && cpu < CPU_SETSIZE && static_cast<int>(cpus.size()) < n; ++cpu)
      if (CPU_ISSET(cpu, &allowed_) && cpu != here_) cpus.push_back(cpu);
    return cpus;
  }

 private:
  cpu_set_t allowed_;
  int here_ = -1;
  bool held_ = false;
};

// Runs body(thread, team, barrier) on up to `threads` threads, the caller's included.
// Where a worker cannot start, the caller may run on fewer CPUs, or the CPUs are shared
// (SharedCpus), the team shrinks: every body splits its work by the team it is given.
// Callers hold CallMutex.
template <class Body>
void RunParallel(int threads, bool fixed, Body&& body) {
  threads = SharedCpus::Team(threads, fixed);
  if (threads <= 1) {
    SpinBarrier alone(1);
    body(0, 1, alone);
    SharedCpus::Record(1, 0, 0, fixed);
    return;
  }
  const int64_t start = NowNs();
  const CallerPlacement placement;
  std::vector<Worker*> team;
  for (int cpu : placement.OtherCpus(threads - 1))
    if (Worker* worker = WorkerOn(cpu)) team.push_back(worker);
  const int n = static_cast<int>(team.size()) + 1;
  SpinBarrier barrier(n);
  std::vector<std::function<void()>> jobs;
  jobs.reserve(team.size());
  for (int i = 1; i < n; ++i) jobs.emplace_back([&, i] { body(i, n, barrier); });
  for (int i = 1; i < n; ++i) team[i - 1]->Post(&jobs[i - 1]);
  body(0, n, barrier);
  for (Worker* worker : team) worker->Wait();
  SharedCpus::Record(n, NowNs() - start, barrier.StalledNs(), fixed);
}

// One call at a time: XLA may run independent calls (the two directions of a
// bidirectional layer) side by side, and two teams of spinning threads on the same
// cores would stall each other at every barrier. The lock also guards Scratch.
std::mutex& CallMutex() {
  static std::mutex mutex;
  return mutex;
}

// Working memory kept from call to call, one grow-only 64-byte-aligned buffer per slot:
// mapping fresh megabytes on every call cost more in page faults than the arithmetic
// of a short sequence (measured with perf). Only a holder of CallMutex may use it;
// nullptr when memory runs out.
enum Slot { kWeights, kStateH, kStateC, kRing, kPerThread, kSlots };
float* Scratch(Slot slot, int64_t n) {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  static std::unique_ptr<float[], Free> buffers[kSlots];
  static int64_t sizes[kSlots] = {};
  if (sizes[slot] < n) {
    size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
    buffers[slot].reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    sizes[slot] = buffers[slot] ? n : 0;
  }
  return buffers[slot].get();
}

ffi::Error OutOfMemory() {
  return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                    "lstm_cpu: out of memory allocating the native loops' working memory "
                    "(lower the batch or sequence length, or use backend='scan')");
}

ffi::Error CheckDims(const Dims& n, ffi::Span<const int64_t> w_hh, int64_t valid_size) {
  if (w_hh.size() != 3 || w_hh[0] != n.d || w_hh[1] != 4 * n.h || w_hh[2] != n.h)
    return ffi::Error::InvalidArgument("w_hh must be [D, 4H, H]");
  if (valid_size != 0 && valid_size != n.d * n.t * n.b)
    return ffi::Error::InvalidArgument("valid must be [D, T, B] or empty");
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- forward
ffi::Error Forward(ffi::Buffer<ffi::F32> x_in, ffi::Buffer<ffi::F32> w_ih,
                   ffi::Buffer<ffi::F32> bias_in, ffi::Buffer<ffi::F32> w_hh,
                   ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                   ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> peep_in,
                   ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> h_last,
                   ffi::ResultBuffer<ffi::F32> c_last,
                   ffi::ResultBuffer<ffi::F32> acts, ffi::ResultBuffer<ffi::F32> cs,
                   int64_t max_threads, bool fixed_threads) {
  auto dims = x_in.dimensions(), h_dims = h0.dimensions();
  if (dims.size() != 4 || h_dims.size() != 3)
    return ffi::Error::InvalidArgument("x must be [D, T, B, I] and h0 [D, B, H]");
  const Dims n{dims[0], dims[1], dims[2], h_dims[2]};
  if (auto e = CheckDims(n, w_hh.dimensions(), valid.element_count()); !e.success()) return e;
  const bool save = acts->element_count() != 0;
  const int64_t I = dims[3], H = n.h, G = 4 * n.h, B = n.b, T = n.t, K = I + H;
  if (Count(w_ih) != n.d * G * I || Count(bias_in) != n.d * G)
    return ffi::Error::InvalidArgument("w_ih must be [D, 4H, I] and bias [D, 4H]");
  if (peep_in.element_count() != 0 && Count(peep_in) != n.d * 3 * H)
    return ffi::Error::InvalidArgument("peep must be [D, 3, H] or empty");
  const int64_t blocks_per_dir = BlocksPerDirection(H), blocks = n.d * blocks_per_dir;
  const float* x = x_in.typed_data();
  const float* bias = bias_in.typed_data();
  const float* peep = peep_in.element_count() ? peep_in.typed_data() : nullptr;
  const bool* mask = valid.element_count() ? valid.typed_data() : nullptr;
  float* y_out = y->typed_data();
  float* acts_out = save ? acts->typed_data() : nullptr;
  float* cs_out = save ? cs->typed_data() : nullptr;

  // Panel (d, block, q, half) holds the 32 columns of gates (2 half, 2 half + 1) of
  // units block * 32 + q * 16 .. + 16, for K = I + H rows: W_ih's, then W_hh's. The
  // input projection is part of each step's product, as if [x_t, h_{t-1}] were one input
  // (or of each chunk's, below). Columns of units past H are zero; their products are never
  // read, so a NaN there (zero times an inf input) stays out of the state.
  std::lock_guard<std::mutex> lock(CallMutex());
  float* packed = Scratch(kWeights, blocks * 4 * K * kBlock);
  // Carried state, double-buffered by step parity: [2, D, B, H].
  float* h_carry = Scratch(kStateH, 2 * n.d * B * H);
  float* c_carry = Scratch(kStateC, 2 * n.d * B * H);
  const int threads = ThreadCount(blocks, 8.0 * n.d * n.b * n.h * K,
                                  n.d * K * G * sizeof(float), max_threads);
  // Weights that outgrow the cache (13 MB at I = H = 650) would stream from memory at every
  // step. There each thread takes the input projections x_t @ W_ih of a chunk of C steps
  // (~256 rows) at the chunk's first step, into [its blocks][q][half][C * B][32], and a
  // step reads only the W_hh rows of the panels: up to 1.5x faster at H = 650 (measured).
  // Weights that stay in cache ran faster with the whole product per step, its tile in L1
  // (5-20% at I = 128, H = 256), except for one row: a step then reads every weight for
  // one product row, and the chunk's projection shares W_ih's reads between its steps
  // (T 200, B 1, I = H = 256: 10-20% faster forward, 14% training step; no gain at B 4).
  const bool chunked = n.d * K * G * sizeof(float) > (6 << 20) || B == 1;
  const int64_t C = chunked ? std::min<int64_t>(std::max<int64_t>(1, T), (256 + B - 1) / B) : 1;
  const int64_t per_thread = chunked ? (blocks + threads - 1) / threads * 4 * C * B * kBlock : 0;
  float* projected = chunked ? Scratch(kPerThread, threads * per_thread) : nullptr;
  if (!packed || !h_carry || !c_carry || (chunked && !projected)) return OutOfMemory();
  RunParallel(threads, fixed_threads, [&](int tid, int nt, SpinBarrier& barrier) {
    const int64_t first = blocks * tid / nt, last = blocks * (tid + 1) / nt;
    alignas(64) float tile[kRows * 2 * kBlock];
    auto gx = [&](int64_t blk, int q, int half) {
      return projected + tid * per_thread + (((blk - first) * 2 + q) * 2 + half) * C * B * kBlock;
    };
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
      for (int q = 0; q < 2; ++q)
        for (int half = 0; half < 2; ++half) {
          float* panel = packed + ((blk * 2 + q) * 2 + half) * K * kBlock;
          // Column j of the panel is row `rows[j]` of W_ih and W_hh (nullptr: a unit past
          // H, zero). Rows outer to columns: the 32 source rows stay in L1 while each
          // panel row is written whole.
          const float *ih[kBlock], *hh[kBlock];
          for (int j = 0; j < kBlock; ++j) {
            const int64_t unit = u0 + q * 16 + j % 16, row = d * G + (2 * half + j / 16) * H + unit;
            ih[j] = unit < H ? w_ih.typed_data() + row * I : nullptr;
            hh[j] = unit < H ? w_hh.typed_data() + row * H : nullptr;
          }
          for (int64_t k = 0; k < I; ++k)
            for (int j = 0; j < kBlock; ++j) panel[k * kBlock + j] = ih[j] ? ih[j][k] : 0.0f;
          for (int64_t k = 0; k < H; ++k)
            for (int j = 0; j < kBlock; ++j)
              panel[(I + k) * kBlock + j] = hh[j] ? hh[j][k] : 0.0f;
        }
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t cur = t & 1, prev = cur ^ 1, slot = t % C;
      for (int64_t blk = first; chunked && slot == 0 && blk < last; ++blk) {
        const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
        const int64_t units = std::min<int64_t>(kBlock, H - u0), steps = std::min(C, T - t);
        for (int q = 0; q * 16 < units; ++q)
          for (int half = 0; half < 2; ++half) {
            const float* panel = packed + ((blk * 2 + q) * 2 + half) * K * kBlock;
            for (int64_t s = 0; s < steps; ++s)
              for (int64_t m = 0; m < B; m += kRows)
                TileRows(static_cast<int>(std::min<int64_t>(kRows, B - m)),
                         x + ((d * T + t + s) * B + m) * I, I, 1, panel, kBlock, I,
                         gx(blk, q, half) + (s * B + m) * kBlock, kBlock);
          }
      }
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
        const int64_t units = std::min<int64_t>(kBlock, H - u0);
        const float* h_prev = t ? h_carry + (prev * n.d + d) * B * H : h0.typed_data() + d * B * H;
        const float* c_prev = t ? c_carry + (prev * n.d + d) * B * H : c0.typed_data() + d * B * H;
        float* h_new = h_carry + (cur * n.d + d) * B * H;
        float* c_new = c_carry + (cur * n.d + d) * B * H;
        const int64_t step = d * T + t;  // index of (d, t) in [D, T, ...] arrays
        for (int64_t m = 0; m < B; m += kRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, B - m));
          for (int q = 0; q * 16 < units; ++q) {
            // The pre-activations of gates (2 half, 2 half + 1), row r at z[half] + r * ldz.
            float* z[2];
            const int64_t ldz = chunked ? kBlock : 2 * kBlock;
            for (int half = 0; half < 2; ++half) {
              const float* panel = packed + ((blk * 2 + q) * 2 + half) * K * kBlock;
              if (chunked) {
                z[half] = gx(blk, q, half) + (slot * B + m) * kBlock;
              } else {
                z[half] = tile + half * kBlock;
                TileRows(rows, x + (step * B + m) * I, I, 1, panel, kBlock, I, z[half], ldz);
              }
              TileRows(rows, h_prev + m * H, H, 1, panel + I * kBlock, kBlock, H, z[half], ldz,
                       true);
            }
            for (int j = 0; j < 16 && q * 16 + j < units; j += kLanes) {
              const int64_t u = u0 + q * 16 + j, lanes = units - q * 16 - j;
              const float* br = bias + d * G + u;
              const float* pr = peep ? peep + d * 3 * H + u : nullptr;
              for (int r = 0; r < rows; ++r) {
                const int64_t b = m + r;
                const float *zif = z[0] + r * ldz + j, *zgo = z[1] + r * ldz + j;
                Vec cp = LoadN(c_prev + b * H + u, lanes);
                Vec zi = Add(Load(zif), LoadN(br, lanes));
                Vec zf = Add(Load(zif + 16), LoadN(br + H, lanes));
                Vec zo = Add(Load(zgo + 16), LoadN(br + 3 * H, lanes));
                if (pr) {
                  zi = Fma(LoadN(pr, lanes), cp, zi);
                  zf = Fma(LoadN(pr + H, lanes), cp, zf);
                }
                Vec gi = Sigmoid(zi), gf = Sigmoid(zf);
                Vec gg = Tanh(Add(Load(zgo), LoadN(br + 2 * H, lanes)));
                Vec c = Fma(gf, cp, Mul(gi, gg));
                if (pr) zo = Fma(LoadN(pr + 2 * H, lanes), c, zo);
                Vec go = Sigmoid(zo);
                Vec h = Mul(go, Tanh(c));
                Vec out = h;
                if (mask && !mask[step * B + b]) {
                  h = LoadN(h_prev + b * H + u, lanes);
                  c = cp;
                  out = Zero();
                }
                StoreN(h_new + b * H + u, h, lanes);
                StoreN(c_new + b * H + u, c, lanes);
                StoreN(y_out + (step * B + b) * H + u, out, lanes);
                if (save) {
                  float* ar = acts_out + (step * B + b) * G + u;
                  StoreN(ar, gi, lanes);
                  StoreN(ar + H, gf, lanes);
                  StoreN(ar + 2 * H, gg, lanes);
                  StoreN(ar + 3 * H, go, lanes);
                  StoreN(cs_out + (step * B + b) * H + u, c, lanes);
                }
              }
            }
          }
        }
      }
      barrier.Wait();
    }
  });
  const int64_t state = n.d * B * H;
  const int64_t last_parity = (T - 1) & 1;
  std::memcpy(h_last->typed_data(), T ? h_carry + last_parity * state : h0.typed_data(),
              state * sizeof(float));
  std::memcpy(c_last->typed_data(), T ? c_carry + last_parity * state : c0.typed_data(),
              state * sizeof(float));
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- backward
ffi::Error Backward(ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> cs,
                    ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> dy,
                    ffi::Buffer<ffi::F32> dh_last, ffi::Buffer<ffi::F32> dc_last,
                    ffi::Buffer<ffi::F32> w_hh, ffi::Buffer<ffi::F32> w_ih,
                    ffi::Buffer<ffi::F32> x_in, ffi::Buffer<ffi::F32> h_prev_in,
                    ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> peep_in,
                    ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dw_t,
                    ffi::ResultBuffer<ffi::F32> dbias, ffi::ResultBuffer<ffi::F32> dh0,
                    ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> dpeep,
                    int64_t max_threads, bool fixed_threads) {
  auto dims = cs.dimensions(), xd = x_in.dimensions();
  if (dims.size() != 4 || xd.size() != 4)
    return ffi::Error::InvalidArgument("cs must be [D, T, B, H] and x [D, T, B, I]");
  const Dims n{dims[0], dims[1], dims[2], dims[3]};
  if (auto e = CheckDims(n, w_hh.dimensions(), valid.element_count()); !e.success()) return e;
  const int64_t I = xd[3], H = n.h, G = 4 * n.h, B = n.b, T = n.t, D = n.d, M = I + H;
  if (Count(w_ih) != D * G * I || Count(h_prev_in) != D * T * B * H)
    return ffi::Error::InvalidArgument("w_ih must be [D, 4H, I] and h_prev [D, T, B, H]");
  const bool peephole = peep_in.element_count() != 0;
  if (peephole && (Count(peep_in) != D * 3 * H || Count(*dpeep) != D * 3 * H))
    return ffi::Error::InvalidArgument("peep and dpeep must be [D, 3, H] or empty");
  const int64_t blocks_per_dir = BlocksPerDirection(H), blocks = D * blocks_per_dir;
  const int64_t in_panels = (I + kBlock - 1) / kBlock, row_tiles = (M + kRows - 1) / kRows;
  // Steps per chunk: the weight gradients of a chunk are one product over its
  // C * B ~ 256 rows of gate gradients, taken while they are in cache.
  const int64_t C = std::max<int64_t>(2, (256 + B - 1) / B);
  const float* a_in = acts.typed_data();
  const float* c_in = cs.typed_data();
  const float* dy_in = dy.typed_data();
  const float* x = x_in.typed_data();
  const float* h_prev = h_prev_in.typed_data();
  const bool* mask = valid.element_count() ? valid.typed_data() : nullptr;
  float* dx_out = dx->typed_data();
  float* dw_out = dw_t->typed_data();
  float* db_out = dbias->typed_data();
  const float* peep = peephole ? peep_in.typed_data() : nullptr;
  // Summed over steps and rows by the thread that owns the units (no two threads write
  // one unit), in the loop: the peepholes' gradients need c, which the chunk's products
  // do not read.
  float* dpeep_out = peephole ? dpeep->typed_data() : nullptr;
  if (peephole) std::memset(dpeep_out, 0, D * 3 * H * sizeof(float));

  std::lock_guard<std::mutex> lock(CallMutex());
  // Panels of 32 columns, 4H rows each: W_hh's for dh_{t-1} = dz_t @ W_hh (one per
  // block of units), then W_ih's for dx_t = dz_t @ W_ih (the last ones zero-padded).
  // Products of the padding columns land in a thread's own tile and are dropped.
  float* packed = Scratch(kWeights, D * (blocks_per_dir + in_panels) * G * kBlock);
  float* dh_carry = Scratch(kStateH, 2 * D * B * H);
  float* dc_carry = Scratch(kStateC, 2 * D * B * H);
  // Gate gradients of a chunk, [2 halves][D][C * B][4H]: chunks alternate halves, so a
  // thread may start the next chunk while another still reads this one.
  float* ring = Scratch(kRing, 2 * D * C * B * G);
  const int threads = ThreadCount(blocks, 8.0 * D * B * H * (H + I),
                                  D * G * H * sizeof(float), max_threads);
  const int64_t per_thread = row_tiles * kRows * C * B + C * B * kBlock + kRows * kBlock;
  float* thread_scratch = Scratch(kPerThread, threads * per_thread);
  if (!packed || !dh_carry || !dc_carry || !ring || !thread_scratch) return OutOfMemory();
  float* ih_packed = packed + D * blocks_per_dir * G * kBlock;
  const int64_t state = D * B * H;
  // The carry of step t lives at parity t & 1; the incoming gradients are step T's.
  std::memcpy(dh_carry + (T & 1) * state, dh_last.typed_data(), state * sizeof(float));
  std::memcpy(dc_carry + (T & 1) * state, dc_last.typed_data(), state * sizeof(float));
  RunParallel(threads, fixed_threads, [&](int tid, int nt, SpinBarrier& barrier) {
    const int64_t first = blocks * tid / nt, last = blocks * (tid + 1) / nt;
    const int64_t in_first = D * in_panels * tid / nt, in_last = D * in_panels * (tid + 1) / nt;
    float* a_packed = thread_scratch + tid * per_thread;
    float* b_packed = a_packed + row_tiles * kRows * C * B;
    float* tile = b_packed + C * B * kBlock;
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
      const float* w = w_hh.typed_data() + d * G * H;
      PackColumns(packed + blk * G * kBlock, G, [&](int64_t k) { return w + k * H; }, u0,
                  std::min<int64_t>(kBlock, H - u0));
    }
    for (int64_t item = in_first; item < in_last; ++item) {
      const int64_t d = item / in_panels, col0 = (item % in_panels) * kBlock;
      const float* w = w_ih.typed_data() + d * G * I;
      PackColumns(ih_packed + item * G * kBlock, G, [&](int64_t k) { return w + k * I; }, col0,
                  std::min<int64_t>(kBlock, I - col0));
    }
    barrier.Wait();  // every thread's products read every W_ih panel's rows of dz
    const Vec one = Set1(1.0f);
    int64_t chunk = 0;
    for (int64_t hi = T - 1; hi >= 0; ++chunk) {
      const int64_t lo = std::max<int64_t>(0, hi - C + 1);
      float* half = ring + (chunk & 1) * D * C * B * G;
      for (int64_t t = hi; t >= lo; --t) {
        const int64_t in = (t + 1) & 1, out = t & 1, slot = t - lo;
        // Phase 1: the gate gradients of this thread's units.
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
          const int64_t step = d * T + t, end = std::min<int64_t>(u0 + kBlock, H);
          const float* dh = dh_carry + (in * D + d) * B * H;
          const float* dc = dc_carry + (in * D + d) * B * H;
          float* dc_prev = dc_carry + (out * D + d) * B * H;
          const float* c_before = t ? c_in + (step - 1) * B * H : c0.typed_data() + d * B * H;
          float* dz_t = half + (d * C + slot) * B * G;
          for (int64_t b = 0; b < B; ++b) {
            const bool live = !mask || mask[step * B + b];
            for (int64_t u = u0; u < end; u += kLanes) {
              const int64_t n = end - u;
              const float* ar = a_in + (step * B + b) * G + u;
              Vec gi = LoadN(ar, n), gf = LoadN(ar + H, n);
              Vec gg = LoadN(ar + 2 * H, n), go = LoadN(ar + 3 * H, n);
              Vec dc_in = LoadN(dc + b * H + u, n);
              Vec dm = Add(LoadN(dh + b * H + u, n), LoadN(dy_in + (step * B + b) * H + u, n));
              Vec dcn = dc_in;
              if (!live) dm = dcn = Zero();
              Vec c = LoadN(c_in + (step * B + b) * H + u, n), tc = Tanh(c);
              auto sig_grad = [&](Vec s) { return Mul(s, Sub(one, s)); };
              Vec dzo = Mul(Mul(dm, tc), sig_grad(go));
              Vec dtot = Fma(Mul(dm, go), Fnma(tc, tc, one), dcn);
              const float* pr = peep ? peep + d * 3 * H + u : nullptr;
              if (pr) dtot = Fma(dzo, LoadN(pr + 2 * H, n), dtot);  // o saw c_t
              Vec cp = LoadN(c_before + b * H + u, n);
              Vec dzi = Mul(Mul(dtot, gg), sig_grad(gi)), dzf = Mul(Mul(dtot, cp), sig_grad(gf));
              float* zr = dz_t + b * G + u;
              StoreN(zr, dzi, n);
              StoreN(zr + H, dzf, n);
              StoreN(zr + 2 * H, Mul(Mul(dtot, gi), Fnma(gg, gg, one)), n);
              StoreN(zr + 3 * H, dzo, n);
              // A padded step passes the gradient through and adds its own, zero unless
              // its activations are NaN: autodiff of the scan's select does the same.
              Vec dc_step = Mul(dtot, gf);
              if (pr) {  // i and f saw c_{t-1}
                dc_step = Fma(dzi, LoadN(pr, n), Fma(dzf, LoadN(pr + H, n), dc_step));
                float* dp = dpeep_out + d * 3 * H + u;
                StoreN(dp, Fma(dzi, cp, LoadN(dp, n)), n);
                StoreN(dp + H, Fma(dzf, cp, LoadN(dp + H, n)), n);
                StoreN(dp + 2 * H, Fma(dzo, c, LoadN(dp + 2 * H, n)), n);
              }
              StoreN(dc_prev + b * H + u, live ? dc_step : Add(dc_in, dc_step), n);
            }
          }
        }
        barrier.Wait();
        // Phase 2: dh_{t-1} of this thread's units = dz_t @ W_hh[:, units].
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
          const int64_t step = d * T + t, units = std::min<int64_t>(kBlock, H - u0);
          const float* dh = dh_carry + (in * D + d) * B * H;
          float* dh_prev = dh_carry + (out * D + d) * B * H;
          const float* dz_t = half + (d * C + slot) * B * G;
          for (int64_t m = 0; m < B; m += kRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kRows, B - m));
            const float* panel = packed + blk * G * kBlock;
            if (units == kBlock) {
              TileRows(rows, dz_t + m * G, G, 1, panel, kBlock, G, dh_prev + m * H + u0, H);
              continue;
            }
            TileRows(rows, dz_t + m * G, G, 1, panel, kBlock, G, tile, kBlock);
            for (int r = 0; r < rows; ++r)
              std::memcpy(dh_prev + (m + r) * H + u0, tile + r * kBlock, units * sizeof(float));
          }
          if (mask)  // a padded step adds the gradient it passes through, as in Phase 1
            for (int64_t b = 0; b < B; ++b)
              if (!mask[step * B + b])
                for (int64_t u = b * H + u0, end = u + units; u < end; u += kLanes)
                  StoreN(dh_prev + u, Add(LoadN(dh + u, end - u), LoadN(dh_prev + u, end - u)),
                         end - u);
        }
      }
      // The chunk's dx = dz @ W_ih and weight gradients, its rows split evenly between
      // the threads (a split by units left a 32-unit block's worth of imbalance at
      // H = 200 on 2 threads); each W_ih panel is read once per chunk, not once per step.
      const int64_t rows_k = (hi - lo + 1) * B;
      for (int64_t d = 0; d < D; ++d) {
        const float* dz = half + d * C * B * G;
        ChunkInputGradient(dz, G, ih_packed + d * in_panels * G * kBlock, in_panels, G, I, rows_k,
                           dx_out + (d * T + lo) * B * I, tile, tid, nt);
        // dw_t[d][rows of this thread] += [x, h_prev]^T @ dz over the chunk, dbias (thread
        // 0) likewise. [x, h_prev]^T of the chunk is packed in tiles of kRows rows.
        const int64_t first_tile = row_tiles * tid / nt, last_tile = row_tiles * (tid + 1) / nt;
        for (int64_t tl = first_tile; tl < last_tile; ++tl)
          for (int64_t k = 0; k < rows_k; ++k) {
            const int64_t row = (d * T + lo) * B + k, m0 = tl * kRows;
            float* a = a_packed + ((tl - first_tile) * rows_k + k) * kRows;
            if (m0 + kRows <= I) {
              std::memcpy(a, x + row * I + m0, kRows * sizeof(float));
            } else if (m0 >= I && m0 + kRows <= M) {
              std::memcpy(a, h_prev + row * H + m0 - I, kRows * sizeof(float));
            } else {
              for (int r = 0; r < kRows; ++r) {
                const int64_t m = m0 + r;
                a[r] = m < I ? x[row * I + m] : m < M ? h_prev[row * H + m - I] : 0.0f;
              }
            }
          }
        const bool accumulate = chunk > 0;
        for (int64_t u0 = 0; u0 < H; u0 += kBlock) {
          const int64_t units = std::min<int64_t>(kBlock, H - u0);
          for (int gate = 0; gate < 4; ++gate) {
            const int64_t col = gate * H + u0;
            PackGateGradients(dz + col, G, rows_k, units, b_packed,
                              tid == 0 ? db_out + d * G + col : nullptr, accumulate);
            for (int64_t tl = first_tile; tl < last_tile; ++tl)
              WeightGradientTile(static_cast<int>(std::min<int64_t>(kRows, M - tl * kRows)),
                                 a_packed + (tl - first_tile) * rows_k * kRows, b_packed,
                                 rows_k, dw_out + (d * M + tl * kRows) * G + col, G, units,
                                 accumulate, tile);
          }
        }
      }
      hi = lo - 1;
    }
  });
  if (T == 0) {  // no step: the gradients of the weights are zero
    std::memset(dw_out, 0, D * M * G * sizeof(float));
    std::memset(db_out, 0, D * G * sizeof(float));
  }
  std::memcpy(dh0->typed_data(), dh_carry, state * sizeof(float));
  std::memcpy(dc0->typed_data(), dc_carry, state * sizeof(float));
  return ffi::Error::Success();
}

// ---------------------------------------------------------------- GRU and RNN
// torch's GRU (gates r, z, n): r = s(x W_ir + b_ir + h W_hr + b_hr), z likewise,
// n = tanh(x W_in + b_in + r * (h W_hn + b_hn)), h' = (1 - z) * n + z * h; and torch's
// RNN, h' = tanh or relu(x W_ih + b_ih + h W_hh + b_hh). One pair of loops serves both,
// given a cell (GruCell, RnnCell below): a block of 32 units has one panel of 32 columns
// per product the cell's step takes, each over the rows of x, of h, or of both (the GRU
// keeps n's input and recurrent products apart, since r multiplies only the second).
//   Forward(x [D,T,B,I], w_ih [D,gH,I], bias [D,bH], w_hh [D,gH,H], h0 [D,B,H],
//           valid [D,T,B] or [0]) -> y [D,T,B,H], h_T [D,B,H], acts [D,T,B,aH] or [0]
//   Backward(acts, dy, dh_T, w_hh, w_ih, x, h_prev [D,T,B,H], valid)
//     -> dx, dW_ih^T [D,I,gH], dW_hh^T [D,H,gH], dbias [D,bH], dh0
// with g, b, a the cell's kGates, kBias, kActs. Threads, chunks, masking and NaN
// propagation as in the LSTM's calls above.

struct GruCell {
  // bias: b_ir + b_hr, b_iz + b_hz, b_in, b_hn; acts: r, z, n, W_hn h + b_hn.
  static constexpr int kGates = 3, kBias = 4, kActs = 4;
  // Panels: r and z over [x, h], n's input part over x, n's recurrent part over h.
  static constexpr int kPanels = 4;
  static constexpr int kPanelGate[kPanels] = {0, 1, 2, 2};
  static constexpr bool kPanelX[kPanels] = {true, true, true, false};
  static constexpr bool kPanelH[kPanels] = {true, true, false, true};
  // The new h from the panels' products z (bias not added), the biases at b (stride H).
  static Vec Step(const Vec* z, const float* b, int64_t H, int64_t n, Vec hp, Vec* acts) {
    const Vec one = Set1(1.0f);
    Vec r = Sigmoid(Add(z[0], LoadN(b, n))), u = Sigmoid(Add(z[1], LoadN(b + H, n)));
    Vec hn = Add(z[3], LoadN(b + 3 * H, n));
    Vec g = Tanh(Fma(r, hn, Add(z[2], LoadN(b + 2 * H, n))));
    acts[0] = r, acts[1] = u, acts[2] = g, acts[3] = hn;
    return Fma(u, hp, Mul(Sub(one, u), g));
  }
  // A step's gradients, ring[kRing]: n's input part, r, z, n's recurrent part (the
  // pre-activations'); `direct` is the part of dh_{t-1} that skips W_hh.
  static constexpr int kRing = 4;
  static void Gradients(const Vec* acts, Vec dm, Vec hp, Vec* ring, Vec* direct) {
    const Vec one = Set1(1.0f);
    const Vec r = acts[0], u = acts[1], g = acts[2], hn = acts[3];
    Vec dn = Mul(Mul(dm, Sub(one, u)), Fnma(g, g, one));
    ring[0] = dn;
    ring[1] = Mul(Mul(dn, hn), Mul(r, Sub(one, r)));
    ring[2] = Mul(Mul(dm, Sub(hp, g)), Mul(u, Sub(one, u)));
    ring[3] = Mul(dn, r);
    *direct = Mul(dm, u);
  }
  // dx = ring[kDxFrom .. + kGates] @ W_ih with ring group j standing for torch gate
  // kDxGate[j]; dh_{t-1} = ring[kDhFrom .. + kGates] @ W_hh in torch's gate order.
  static constexpr int kDxFrom = 0, kDhFrom = 1;
  static constexpr int kDxGate[kGates] = {2, 0, 1};
  // Ring group -> gate of dW_ih, of dW_hh (-1: none), slot of dbias.
  static constexpr int kIhGate[kRing] = {2, 0, 1, -1};
  static constexpr int kHhGate[kRing] = {-1, 0, 1, 2};
  static constexpr int kBiasSlot[kRing] = {2, 0, 1, 3};
};

template <bool kRelu>
struct RnnCell {
  // bias: b_ih + b_hh; acts: the new h before masking.
  static constexpr int kGates = 1, kBias = 1, kActs = 1, kPanels = 1, kRing = 1;
  static constexpr int kPanelGate[1] = {0};
  static constexpr bool kPanelX[1] = {true}, kPanelH[1] = {true};
  static Vec Step(const Vec* z, const float* b, int64_t, int64_t n, Vec, Vec* acts) {
    Vec pre = Add(z[0], LoadN(b, n));
    acts[0] = kRelu ? Max(Zero(), pre) : Tanh(pre);  // NaN passes through Max (2nd operand)
    return acts[0];
  }
  static void Gradients(const Vec* acts, Vec dm, Vec, Vec* ring, Vec* direct) {
    // relu: the gradient where the output is above zero, else zero (as jax.nn.relu's).
    ring[0] = kRelu ? SelectLess(Sub(Zero(), acts[0]), 0.0f, dm, Zero())
                    : Mul(dm, Fnma(acts[0], acts[0], Set1(1.0f)));
    *direct = Zero();
  }
  static constexpr int kDxFrom = 0, kDhFrom = 0;
  static constexpr int kDxGate[1] = {0};
  static constexpr int kIhGate[1] = {0}, kHhGate[1] = {0}, kBiasSlot[1] = {0};
};

// Offsets of a block's panels, in floats from the block's first one.
template <class Cell>
struct PanelLayout {
  int64_t at[Cell::kPanels], size = 0;
  PanelLayout(int64_t I, int64_t H) {
    for (int p = 0; p < Cell::kPanels; ++p) {
      at[p] = size;
      size += ((Cell::kPanelX[p] ? I : 0) + (Cell::kPanelH[p] ? H : 0)) * kBlock;
    }
  }
};

template <class Cell>
ffi::Error CellForward(ffi::Buffer<ffi::F32> x_in, ffi::Buffer<ffi::F32> w_ih,
                       ffi::Buffer<ffi::F32> bias_in, ffi::Buffer<ffi::F32> w_hh,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::PRED> valid,
                       ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> h_last,
                       ffi::ResultBuffer<ffi::F32> acts, int64_t max_threads,
                       bool fixed_threads) {
  constexpr int P = Cell::kPanels, A = Cell::kActs;
  auto dims = x_in.dimensions(), h_dims = h0.dimensions(), hh = w_hh.dimensions();
  if (dims.size() != 4 || h_dims.size() != 3)
    return ffi::Error::InvalidArgument("x must be [D, T, B, I] and h0 [D, B, H]");
  const int64_t D = dims[0], T = dims[1], B = dims[2], I = dims[3], H = h_dims[2];
  const int64_t G = Cell::kGates * H, K = I + H;
  if (hh.size() != 3 || hh[0] != D || hh[1] != G || hh[2] != H)
    return ffi::Error::InvalidArgument("w_hh must be [D, gates * H, H]");
  if (Count(w_ih) != D * G * I || Count(bias_in) != D * Cell::kBias * H)
    return ffi::Error::InvalidArgument("w_ih or bias has the wrong size");
  if (valid.element_count() != 0 && Count(valid) != D * T * B)
    return ffi::Error::InvalidArgument("valid must be [D, T, B] or empty");
  const bool save = acts->element_count() != 0;
  const int64_t blocks_per_dir = BlocksPerDirection(H), blocks = D * blocks_per_dir;
  const PanelLayout<Cell> layout(I, H);
  int x_panels = 0;  // the panels that read x, numbered in order
  int x_index[P];
  for (int p = 0; p < P; ++p) x_index[p] = Cell::kPanelX[p] ? x_panels++ : -1;
  const float* x = x_in.typed_data();
  const float* bias = bias_in.typed_data();
  const bool* mask = valid.element_count() ? valid.typed_data() : nullptr;
  float* y_out = y->typed_data();
  float* acts_out = save ? acts->typed_data() : nullptr;

  std::lock_guard<std::mutex> lock(CallMutex());
  float* packed = Scratch(kWeights, blocks * layout.size);
  float* h_carry = Scratch(kStateH, 2 * D * B * H);  // by step parity
  const int64_t weight_bytes = D * K * G * sizeof(float);
  const int threads = ThreadCount(blocks, 2.0 * D * B * G * K, weight_bytes, max_threads);
  // As the LSTM's forward: weights beyond the cache take the input products of a chunk of
  // steps at once, [thread's blocks][x panels][C * B][32].
  const bool chunked = weight_bytes > (6 << 20) || B == 1;  // as in Forward
  const int64_t C = chunked ? std::min<int64_t>(std::max<int64_t>(1, T), (256 + B - 1) / B) : 1;
  const int64_t per_thread =
      chunked ? (blocks + threads - 1) / threads * x_panels * C * B * kBlock : 0;
  float* projected = chunked ? Scratch(kPerThread, threads * per_thread) : nullptr;
  if (!packed || !h_carry || (chunked && !projected)) return OutOfMemory();
  RunParallel(threads, fixed_threads, [&](int tid, int nt, SpinBarrier& barrier) {
    const int64_t first = blocks * tid / nt, last = blocks * (tid + 1) / nt;
    alignas(64) float tile[P * kRows * kBlock];
    auto gx = [&](int64_t blk, int p) {
      const int64_t slot = (blk - first) * x_panels + x_index[p];
      return projected + tid * per_thread + slot * C * B * kBlock;
    };
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
      for (int p = 0; p < P; ++p) {
        // Column j: row `row` of the gate's W_ih (x rows) and W_hh (h rows); zero past H.
        float* panel = packed + blk * layout.size + layout.at[p];
        const float *ih[kBlock], *rec[kBlock];
        for (int j = 0; j < kBlock; ++j) {
          const int64_t unit = u0 + j, row = d * G + Cell::kPanelGate[p] * H + unit;
          ih[j] = unit < H ? w_ih.typed_data() + row * I : nullptr;
          rec[j] = unit < H ? w_hh.typed_data() + row * H : nullptr;
        }
        if (Cell::kPanelX[p]) {
          for (int64_t k = 0; k < I; ++k)
            for (int j = 0; j < kBlock; ++j) panel[k * kBlock + j] = ih[j] ? ih[j][k] : 0.0f;
          panel += I * kBlock;
        }
        for (int64_t k = 0; Cell::kPanelH[p] && k < H; ++k)
          for (int j = 0; j < kBlock; ++j) panel[k * kBlock + j] = rec[j] ? rec[j][k] : 0.0f;
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t cur = t & 1, prev = cur ^ 1, slot = t % C;
      for (int64_t blk = first; chunked && slot == 0 && blk < last; ++blk) {
        const int64_t d = blk / blocks_per_dir, steps = std::min(C, T - t);
        for (int p = 0; p < P; ++p)
          for (int64_t s = 0; Cell::kPanelX[p] && s < steps; ++s)
            for (int64_t m = 0; m < B; m += kRows)
              TileRows(static_cast<int>(std::min<int64_t>(kRows, B - m)),
                       x + ((d * T + t + s) * B + m) * I, I, 1,
                       packed + blk * layout.size + layout.at[p], kBlock, I,
                       gx(blk, p) + (s * B + m) * kBlock, kBlock);
      }
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
        const int64_t units = std::min<int64_t>(kBlock, H - u0);
        const float* h_prev = t ? h_carry + (prev * D + d) * B * H : h0.typed_data() + d * B * H;
        float* h_new = h_carry + (cur * D + d) * B * H;
        const int64_t step = d * T + t;
        for (int64_t m = 0; m < B; m += kRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kRows, B - m));
          float* z[P];  // each panel's product, row r at z[p] + r * 32
          for (int p = 0; p < P; ++p) {
            const float* panel = packed + blk * layout.size + layout.at[p];
            z[p] = tile + p * kRows * kBlock;
            if (Cell::kPanelX[p]) {
              if (chunked) z[p] = gx(blk, p) + (slot * B + m) * kBlock;
              else TileRows(rows, x + (step * B + m) * I, I, 1, panel, kBlock, I, z[p], kBlock);
              panel += I * kBlock;
            }
            if (Cell::kPanelH[p])
              TileRows(rows, h_prev + m * H, H, 1, panel, kBlock, H, z[p], kBlock,
                       Cell::kPanelX[p]);
          }
          for (int j = 0; j < units; j += kLanes) {
            const int64_t u = u0 + j, lanes = units - j;
            for (int r = 0; r < rows; ++r) {
              const int64_t b = m + r;
              Vec zr[P], a[A];
              for (int p = 0; p < P; ++p) zr[p] = Load(z[p] + r * kBlock + j);
              Vec hp = LoadN(h_prev + b * H + u, lanes);
              Vec h = Cell::Step(zr, bias + d * Cell::kBias * H + u, H, lanes, hp, a);
              Vec out = h;
              if (mask && !mask[step * B + b]) h = hp, out = Zero();
              StoreN(h_new + b * H + u, h, lanes);
              StoreN(y_out + (step * B + b) * H + u, out, lanes);
              for (int k = 0; save && k < A; ++k)
                StoreN(acts_out + (step * B + b) * A * H + k * H + u, a[k], lanes);
            }
          }
        }
      }
      barrier.Wait();
    }
  });
  const int64_t state = D * B * H;
  std::memcpy(h_last->typed_data(), T ? h_carry + ((T - 1) & 1) * state : h0.typed_data(),
              state * sizeof(float));
  return ffi::Error::Success();
}

template <class Cell>
ffi::Error CellBackward(ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> dy,
                        ffi::Buffer<ffi::F32> dh_last, ffi::Buffer<ffi::F32> w_hh,
                        ffi::Buffer<ffi::F32> w_ih, ffi::Buffer<ffi::F32> x_in,
                        ffi::Buffer<ffi::F32> h_prev_in, ffi::Buffer<ffi::PRED> valid,
                        ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dw_ih_t,
                        ffi::ResultBuffer<ffi::F32> dw_hh_t, ffi::ResultBuffer<ffi::F32> dbias,
                        ffi::ResultBuffer<ffi::F32> dh0, int64_t max_threads,
                        bool fixed_threads) {
  constexpr int A = Cell::kActs, R = Cell::kRing;
  auto dims = h_prev_in.dimensions(), xd = x_in.dimensions();
  if (dims.size() != 4 || xd.size() != 4)
    return ffi::Error::InvalidArgument("h_prev must be [D, T, B, H] and x [D, T, B, I]");
  const int64_t D = dims[0], T = dims[1], B = dims[2], H = dims[3], I = xd[3];
  const int64_t G = Cell::kGates * H, W = R * H;  // W: a step's row of gate gradients
  if (Count(w_hh) != D * G * H || Count(w_ih) != D * G * I || Count(acts) != D * T * B * A * H)
    return ffi::Error::InvalidArgument("w_hh, w_ih or acts has the wrong size");
  if (valid.element_count() != 0 && Count(valid) != D * T * B)
    return ffi::Error::InvalidArgument("valid must be [D, T, B] or empty");
  const int64_t blocks_per_dir = BlocksPerDirection(H), blocks = D * blocks_per_dir;
  const int64_t in_panels = (I + kBlock - 1) / kBlock;
  const int64_t x_tiles = (I + kRows - 1) / kRows, row_tiles = x_tiles + (H + kRows - 1) / kRows;
  const int64_t C = std::max<int64_t>(2, (256 + B - 1) / B);
  const float* a_in = acts.typed_data();
  const float* dy_in = dy.typed_data();
  const float* x = x_in.typed_data();
  const float* h_prev = h_prev_in.typed_data();
  const bool* mask = valid.element_count() ? valid.typed_data() : nullptr;
  float* dx_out = dx->typed_data();
  float* dwi_out = dw_ih_t->typed_data();
  float* dwh_out = dw_hh_t->typed_data();
  float* db_out = dbias->typed_data();

  std::lock_guard<std::mutex> lock(CallMutex());
  // Panels of 32 columns and G rows: W_hh's in torch's row order for dh_{t-1}, one per
  // block of units; then W_ih's with rows in the ring's order for dx (the last ones
  // zero-padded).
  float* packed = Scratch(kWeights, D * (blocks_per_dir + in_panels) * G * kBlock);
  float* dh_carry = Scratch(kStateH, 2 * D * B * H);
  float* ring = Scratch(kRing, 2 * D * C * B * W);
  const int threads = ThreadCount(blocks, 2.0 * D * B * G * (H + I), D * G * H * sizeof(float),
                                  max_threads);
  const int64_t per_thread = row_tiles * kRows * C * B + C * B * kBlock + kRows * kBlock;
  float* thread_scratch = Scratch(kPerThread, threads * per_thread);
  if (!packed || !dh_carry || !ring || !thread_scratch) return OutOfMemory();
  float* ih_packed = packed + D * blocks_per_dir * G * kBlock;
  const int64_t state = D * B * H;
  std::memcpy(dh_carry + (T & 1) * state, dh_last.typed_data(), state * sizeof(float));
  RunParallel(threads, fixed_threads, [&](int tid, int nt, SpinBarrier& barrier) {
    const int64_t first = blocks * tid / nt, last = blocks * (tid + 1) / nt;
    const int64_t in_first = D * in_panels * tid / nt, in_last = D * in_panels * (tid + 1) / nt;
    float* a_packed = thread_scratch + tid * per_thread;
    float* b_packed = a_packed + row_tiles * kRows * C * B;
    float* tile = b_packed + C * B * kBlock;
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
      const float* w = w_hh.typed_data() + d * G * H;
      PackColumns(packed + blk * G * kBlock, G, [&](int64_t k) { return w + k * H; }, u0,
                  std::min<int64_t>(kBlock, H - u0));
    }
    for (int64_t item = in_first; item < in_last; ++item) {
      const int64_t d = item / in_panels, col0 = (item % in_panels) * kBlock;
      const float* w = w_ih.typed_data() + d * G * I;
      PackColumns(  // rows in the order of the ring's gate gradients
          ih_packed + item * G * kBlock, G,
          [&](int64_t k) { return w + (Cell::kDxGate[k / H] * H + k % H) * I; }, col0,
          std::min<int64_t>(kBlock, I - col0));
    }
    barrier.Wait();
    int64_t chunk = 0;
    for (int64_t hi = T - 1; hi >= 0; ++chunk) {
      const int64_t lo = std::max<int64_t>(0, hi - C + 1);
      float* half = ring + (chunk & 1) * D * C * B * W;
      for (int64_t t = hi; t >= lo; --t) {
        const int64_t in = (t + 1) & 1, out = t & 1, slot = t - lo;
        // Phase 1: the gate gradients of this thread's units, and the part of dh_{t-1}
        // that skips W_hh (for a padded step, plus dh itself).
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
          const int64_t step = d * T + t, end = std::min<int64_t>(u0 + kBlock, H);
          const float* dh = dh_carry + (in * D + d) * B * H;
          float* dh_prev = dh_carry + (out * D + d) * B * H;
          float* dg_t = half + (d * C + slot) * B * W;
          for (int64_t b = 0; b < B; ++b) {
            const bool live = !mask || mask[step * B + b];
            for (int64_t u = u0; u < end; u += kLanes) {
              const int64_t n = end - u;
              Vec a[A], g[R], direct;
              const float* ar = a_in + (step * B + b) * A * H + u;
              for (int k = 0; k < A; ++k) a[k] = LoadN(ar + k * H, n);
              Vec dh_in = LoadN(dh + b * H + u, n);
              Vec dm = live ? Add(dh_in, LoadN(dy_in + (step * B + b) * H + u, n)) : Zero();
              Cell::Gradients(a, dm, LoadN(h_prev + (step * B + b) * H + u, n), g, &direct);
              for (int k = 0; k < R; ++k) StoreN(dg_t + b * W + k * H + u, g[k], n);
              StoreN(dh_prev + b * H + u, live ? direct : Add(dh_in, direct), n);
            }
          }
        }
        barrier.Wait();
        // Phase 2: dh_{t-1} of this thread's units += ring[kDhFrom ..] @ W_hh[:, units].
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t d = blk / blocks_per_dir, u0 = (blk % blocks_per_dir) * kBlock;
          const int64_t units = std::min<int64_t>(kBlock, H - u0);
          float* dh_prev = dh_carry + (out * D + d) * B * H;
          const float* dg_t = half + (d * C + slot) * B * W + Cell::kDhFrom * H;
          const float* panel = packed + blk * G * kBlock;
          for (int64_t m = 0; m < B; m += kRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kRows, B - m));
            if (units == kBlock) {
              TileRows(rows, dg_t + m * W, W, 1, panel, kBlock, G, dh_prev + m * H + u0, H, true);
              continue;
            }
            TileRows(rows, dg_t + m * W, W, 1, panel, kBlock, G, tile, kBlock);
            for (int r = 0; r < rows; ++r)
              for (int64_t j = 0; j < units; j += kLanes) {
                float* dst = dh_prev + (m + r) * H + u0 + j;
                StoreN(dst, Add(LoadN(dst, units - j), Load(tile + r * kBlock + j)), units - j);
              }
          }
        }
      }
      // The chunk's dx and weight gradients, rows split evenly between the threads.
      const int64_t rows_k = (hi - lo + 1) * B;
      for (int64_t d = 0; d < D; ++d) {
        const float* dg = half + d * C * B * W;
        ChunkInputGradient(dg + Cell::kDxFrom * H, W, ih_packed + d * in_panels * G * kBlock,
                           in_panels, G, I, rows_k, dx_out + (d * T + lo) * B * I, tile, tid, nt);
        // Row tiles of x^T (the first x_tiles) and of h_prev^T over the chunk, packed.
        const int64_t first_tile = row_tiles * tid / nt, last_tile = row_tiles * (tid + 1) / nt;
        for (int64_t tl = first_tile; tl < last_tile; ++tl) {
          const bool is_x = tl < x_tiles;
          const int64_t m0 = (is_x ? tl : tl - x_tiles) * kRows, width = is_x ? I : H;
          const float* src = is_x ? x : h_prev;
          for (int64_t k = 0; k < rows_k; ++k) {
            const float* row = src + ((d * T + lo) * B + k) * width + m0;
            float* a = a_packed + ((tl - first_tile) * rows_k + k) * kRows;
            if (m0 + kRows <= width) {
              std::memcpy(a, row, kRows * sizeof(float));
            } else {
              for (int r = 0; r < kRows; ++r) a[r] = m0 + r < width ? row[r] : 0.0f;
            }
          }
        }
        const bool accumulate = chunk > 0;
        for (int64_t u0 = 0; u0 < H; u0 += kBlock) {
          const int64_t units = std::min<int64_t>(kBlock, H - u0);
          for (int source = 0; source < R; ++source) {
            float* db = db_out + d * Cell::kBias * H + Cell::kBiasSlot[source] * H + u0;
            PackGateGradients(dg + source * H + u0, W, rows_k, units, b_packed,
                              tid == 0 ? db : nullptr, accumulate);
            for (int64_t tl = first_tile; tl < last_tile; ++tl) {
              const bool is_x = tl < x_tiles;
              const int gate = is_x ? Cell::kIhGate[source] : Cell::kHhGate[source];
              if (gate < 0) continue;
              const int64_t m0 = (is_x ? tl : tl - x_tiles) * kRows, width = is_x ? I : H;
              float* dw = (is_x ? dwi_out + (d * I + m0) * G : dwh_out + (d * H + m0) * G) +
                          gate * H + u0;
              WeightGradientTile(static_cast<int>(std::min<int64_t>(kRows, width - m0)),
                                 a_packed + (tl - first_tile) * rows_k * kRows, b_packed,
                                 rows_k, dw, G, units, accumulate, tile);
            }
          }
        }
      }
      hi = lo - 1;
    }
  });
  if (T == 0) {
    std::memset(dwi_out, 0, D * I * G * sizeof(float));
    std::memset(dwh_out, 0, D * H * G * sizeof(float));
    std::memset(db_out, 0, D * Cell::kBias * H * sizeof(float));
  }
  std::memcpy(dh0->typed_data(), dh_carry, state * sizeof(float));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("max_threads")
                                  .Attr<bool>("fixed_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("max_threads")
                                  .Attr<bool>("fixed_threads"));


// The bindings of CellForward<Cell> as `Name`Forward and CellBackward<Cell> as
// `Name`Backward (arguments and results as in "GRU and RNN" above).
#define LSTM_JAX_CELL_HANDLERS(Name, ...)                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Name##Forward, CellForward<__VA_ARGS__>,    \
                                ffi::Ffi::Bind()                            \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::PRED>>()          \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Attr<int64_t>("max_threads")          \
                                    .Attr<bool>("fixed_threads"));         \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(Name##Backward, CellBackward<__VA_ARGS__>,  \
                                ffi::Ffi::Bind()                            \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::F32>>()           \
                                    .Arg<ffi::Buffer<ffi::PRED>>()          \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Ret<ffi::Buffer<ffi::F32>>()           \
                                    .Attr<int64_t>("max_threads")          \
                                    .Attr<bool>("fixed_threads"));

LSTM_JAX_CELL_HANDLERS(Gru, GruCell)
LSTM_JAX_CELL_HANDLERS(RnnTanh, RnnCell<false>)
LSTM_JAX_CELL_HANDLERS(RnnRelu, RnnCell<true>)

// The team of the last call (1: the caller alone), for lstm_cpu.last_call_team().
extern "C" int LstmJaxNativeLastTeam() { return SharedCpus::LastTeam(); }
