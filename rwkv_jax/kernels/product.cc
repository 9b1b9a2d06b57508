// Products of float32 activations with half- and quarter-width weights, read at their width.
//
// y[n, f] = sum_d x[n, d] * (widen(w[f, d]) * scale[f]) for x [N, D], weights stored one output per
// row, w [F, D] (bfloat16 or int8; scale [F], all ones for bfloat16; or float32, for the decode
// head), float32 accumulation. The widened weights are exactly XLA's `w.astype(f32) *
// scale[:, None]`; only the summation order differs.
//
// A few rows (batch-1 decode): each weight row is streamed once and dotted with every activation
// row, so the product runs at the memory's speed (`few_rows`). Many rows (prefill, batched
// decode): the product is compute-bound, so a panel of output channels is widened into a small
// float32 buffer that stays in L2 and multiplied with the activations, packed 16 rows to a vector,
// by a register-blocked FMA kernel (`many_rows`). Neither ever builds the whole widened matrix.
// Work is split over XLA's intra-op threads.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <immintrin.h>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float widen(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float widen(int8_t q) { return static_cast<float>(q); }
inline float widen(float v) { return v; }

// Runs fn(0), ..., fn(parts - 1) on the calling thread and XLA's intra-op threads. Parts are
// claimed from a shared counter, so when the pool is busy the caller runs them all itself rather
// than wait on a task that has not started; a helper that starts late finds nothing left.
template <typename Fn>
void parallel_for(ffi::ThreadPool& pool, int64_t parts, const Fn& fn) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto shared = std::make_shared<Shared>();
  auto run = [shared, parts, fn = &fn] {
    for (int64_t p; (p = shared->next.fetch_add(1, std::memory_order_relaxed)) < parts;) {
      (*fn)(p);
      shared->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min<int64_t>(pool.num_threads() - 1, parts - 1);
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule(decltype(run)(run));
  run();
  while (shared->done.load(std::memory_order_acquire) < parts) std::this_thread::yield();
}

#ifdef __AVX512F__
// 16 weights widened to float32 lanes.
inline __m512 widen16(const uint16_t* w) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))), 16));
}
inline __m512 widen16(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
}
inline __m512 widen16(const float* w) { return _mm512_loadu_ps(w); }

// One row of w against one row of x, four accumulators deep.
template <typename W>
inline float dot(const float* x, const W* w, int64_t d) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t k = 0;
  for (; k + 64 <= d; k += 64) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), widen16(w + k), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), widen16(w + k + 16), a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), widen16(w + k + 32), a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), widen16(w + k + 48), a3);
  }
  for (; k + 16 <= d; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), widen16(w + k), a0);
  float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  for (; k < d; ++k) s += x[k] * widen(w[k]);
  return s;
}
#else
template <typename W>
inline float dot(const float* x, const W* w, int64_t d) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < d; ++k) s += x[k] * widen(w[k]);
  return s;
}
#endif

template <typename W>
void rows(const float* x, const W* w, const float* scale, float* y, int64_t n, int64_t d, int64_t f,
          int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row)
    for (int64_t b = 0; b < n; ++b) y[b * f + row] = dot(x + b * d, w + row * d, d) * scale[row];
}

constexpr int64_t kMinRowsPerTask = 256;  // below this a task costs more to hand over than to run

// Each thread owns a block of weight rows and reads it front to back: every weight byte is read
// once per call, in order.
template <typename W>
void few_rows(ffi::ThreadPool& pool, const float* x, const W* w, const float* scale, float* y,
              int64_t n, int64_t d, int64_t f) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), f / kMinRowsPerTask));
  const int64_t per = (f + parts - 1) / parts;
  parallel_for(pool, parts, [&](int64_t part) {
    rows(x, w, scale, y, n, d, f, part * per, std::min(f, (part + 1) * per));
  });
}

#ifdef __AVX512F__
constexpr int64_t kFewRows = 16;           // at most this many activation rows take `few_rows`
constexpr int kLanes = 16;                 // float32 lanes in a vector
constexpr int kAccumulators = 24;          // of the 32 vector registers; the rest hold activations
constexpr int64_t kPanelBytes = 96 << 10;  // widened weights one thread holds at once (in L2)

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// dst[j * dst_stride + i] = src[i * src_stride + j] for i, j < 16, in registers: 4x4 within each
// 128-bit lane (unpack), then across the lanes (shuffle_f32x4).
inline void transpose16(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  const auto pd = [](__m512 v) { return _mm512_castps_pd(v); };
  for (int i = 0; i < 16; i += 4) {  // r[i + m], lane q: column 4q + m of rows i..i+3
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i]), pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i]), pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i + 1]), pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i + 1]), pd(t[i + 3])));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 lo01 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x44), hi01 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xEE);
    const __m512 lo23 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x44), hi23 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xEE);
    _mm512_storeu_ps(dst + m * dst_stride, _mm512_shuffle_f32x4(lo01, lo23, 0x88));
    _mm512_storeu_ps(dst + (4 + m) * dst_stride, _mm512_shuffle_f32x4(lo01, lo23, 0xDD));
    _mm512_storeu_ps(dst + (8 + m) * dst_stride, _mm512_shuffle_f32x4(hi01, hi23, 0x88));
    _mm512_storeu_ps(dst + (12 + m) * dst_stride, _mm512_shuffle_f32x4(hi01, hi23, 0xDD));
  }
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: 16 x 16 blocks in
// registers, the ragged edges one by one.
void transpose(const float* src, int64_t src_stride, int64_t rows, int64_t cols, float* dst, int64_t dst_stride) {
  for (int64_t i0 = 0; i0 < rows; i0 += kLanes)
    for (int64_t j0 = 0; j0 < cols; j0 += kLanes) {
      if (i0 + kLanes <= rows && j0 + kLanes <= cols) {
        for (int i = 0; i < kLanes; ++i) __builtin_prefetch(src + (i0 + i) * src_stride + j0 + 4 * kLanes);
        transpose16(src + i0 * src_stride + j0, src_stride, dst + j0 * dst_stride + i0, dst_stride);
        continue;
      }
      for (int64_t j = j0; j < std::min(cols, j0 + kLanes); ++j)
        for (int64_t i = i0; i < std::min(rows, i0 + kLanes); ++i) dst[j * dst_stride + i] = src[i * src_stride + j];
    }
}

// The activations of one block of V * 16 rows, [D / 16][16][V * 16] (k-major, so the kernel loads
// V vectors of rows per k), zeros past row n and past d.
template <int V>
void pack_rows(const float* x, int64_t n, int64_t d, int64_t block, float* out) {
  constexpr int kWidth = V * kLanes;
  const int64_t dp = round_up(d, kLanes), row0 = block * kWidth, rows = std::clamp<int64_t>(n - row0, 0, kWidth);
  transpose(x + row0 * d, d, rows, d, out, kWidth);
  for (int64_t k = 0; k < dp; ++k)
    for (int64_t c = k < d ? rows : 0; c < kWidth; ++c) out[k * kWidth + c] = 0.f;
}

// Weight rows [f0, f0 + M) widened and scaled, [D / 16][M][16]: for each k the kernel broadcasts
// M weights from one 64-byte-aligned stretch. Zeros past f and past d.
template <int M, typename W>
void widen_rows(const W* w, const float* scale, int64_t f, int64_t d, int64_t f0, float* out) {
  const int64_t full = d / kLanes, chunks = round_up(d, kLanes) / kLanes;
  for (int r = 0; r < M; ++r) {
    const int64_t row = f0 + r;
    float* o = out + r * kLanes;
    if (row >= f) {
      for (int64_t c = 0; c < chunks; ++c) _mm512_store_ps(o + c * M * kLanes, _mm512_setzero_ps());
      continue;
    }
    const W* src = w + row * d;
    const __m512 s = _mm512_set1_ps(scale[row]);
    for (int64_t c = 0; c < full; ++c) _mm512_store_ps(o + c * M * kLanes, _mm512_mul_ps(widen16(src + c * kLanes), s));
    for (int l = 0; full < chunks && l < kLanes; ++l) {
      const int64_t k = full * kLanes + l;
      o[full * M * kLanes + l] = k < d ? widen(src[k]) * scale[row] : 0.f;
    }
  }
}

// out[r][i] = sum_k w[f0 + r, k] x[n0 + i, k] for M weight rows and V * 16 activation rows,
// accumulated over all of D in registers and stored as M rows of V vectors. Meanwhile `ahead`
// lines from `next` on are fetched into L2 a few per k step (the weights widened next).
template <int V>
void tile(const float* wp, const float* xp, int64_t d, float* out, const char* next, int64_t ahead) {
  constexpr int M = kAccumulators / V, kWidth = V * kLanes;
  __m512 acc[M][V];
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t chunks = round_up(d, kLanes) / kLanes, per_chunk = (ahead + chunks - 1) / chunks;
  for (int64_t c = 0; c < chunks; ++c, wp += M * kLanes, xp += kLanes * kWidth) {
    for (int64_t j = c * per_chunk; j < std::min(ahead, (c + 1) * per_chunk); ++j) __builtin_prefetch(next + 64 * j, 0, 2);
#pragma GCC unroll 16
    for (int l = 0; l < kLanes; ++l) {
      __m512 xv[V];
      for (int v = 0; v < V; ++v) xv[v] = _mm512_load_ps(xp + l * kWidth + v * kLanes);
      for (int r = 0; r < M; ++r) {
        const __m512 wr = _mm512_set1_ps(wp[r * kLanes + l]);
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(wr, xv[v], acc[r][v]);
      }
    }
  }
  for (int r = 0; r < M; ++r)
    for (int v = 0; v < V; ++v) _mm512_store_ps(out + r * kWidth + v * kLanes, acc[r][v]);
}

float* scratch(std::vector<float>& buf, int64_t floats) {
  if (static_cast<int64_t>(buf.size()) < floats + kLanes) buf.resize(floats + kLanes);
  auto p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t{63});  // 64-byte aligned for vector loads
}

// The activations packed once per call (in parallel), then panels of output rows handed out to
// the threads; each widens its panel and runs the kernel over every block of activation rows.
template <int V, typename W>
void many_rows(ffi::ThreadPool& pool, const float* x, const W* w, const float* scale, float* y,
               int64_t n, int64_t d, int64_t f) {
  constexpr int M = kAccumulators / V, kWidth = V * kLanes;
  const int64_t dp = round_up(d, kLanes), blocks = (n + kWidth - 1) / kWidth;
  thread_local std::vector<float> packed_buf;
  float* packed = scratch(packed_buf, blocks * dp * kWidth);
  parallel_for(pool, blocks, [&](int64_t b) { pack_rows<V>(x, n, d, b, packed + b * dp * kWidth); });
  const int64_t tiles = std::max<int64_t>(1, kPanelBytes / (M * dp * 4));
  const int64_t panel = tiles * M, panels = (f + panel - 1) / panel;
  const int64_t threads = std::min<int64_t>(pool.num_threads(), panels);
  parallel_for(pool, panels, [&](int64_t p) {
    thread_local std::vector<float> widened_buf, out_buf;
    float* widened = scratch(widened_buf, panel * dp);
    float* out = scratch(out_buf, panel * kWidth);
    const int64_t f0 = p * panel, cols = std::min(panel, f - f0), used = (cols + M - 1) / M;
    for (int64_t t = 0; t < used; ++t) widen_rows<M>(w, scale, f, d, f0 + t * M, widened + t * M * dp);
    // the panel this thread likely takes next (parts go round the threads), fetched while this
    // one computes: at few blocks the widening would otherwise wait on memory
    const int64_t next_f = f0 + threads * panel;
    const char* next = reinterpret_cast<const char*>(w + std::min(next_f, f) * d);
    const int64_t lines = std::clamp<int64_t>(f - next_f, 0, panel) * d * sizeof(W) / 64, calls = blocks * used;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t rows = std::min<int64_t>(kWidth, n - b * kWidth);
      for (int64_t t = 0; t < used; ++t) {
        const int64_t first = (b * used + t) * lines / calls, last = (b * used + t + 1) * lines / calls;
        tile<V>(widened + t * M * dp, packed + b * dp * kWidth, d, out + t * M * kWidth, next + 64 * first, last - first);
      }
      transpose(out, kWidth, cols, rows, y + b * kWidth * f + f0, f);
    }
  });
}
#endif

template <typename W>
void product(ffi::ThreadPool& pool, const float* x, const W* w, const float* scale, float* y, int64_t n,
             int64_t d, int64_t f) {
#ifdef __AVX512F__
  if (n > 3 * kLanes) return many_rows<4>(pool, x, w, scale, y, n, d, f);
  if (n > 2 * kLanes) return many_rows<3>(pool, x, w, scale, y, n, d, f);
  if (n > kFewRows) return many_rows<2>(pool, x, w, scale, y, n, d, f);
#endif
  few_rows(pool, x, w, scale, y, n, d, f);
}

// w arrives as any buffer of W's width: bfloat16 rows come as they are or, from inside a loop,
// as their bits (uint16; see `rwkv_jax.quant.loop_safe`).
template <typename W>
ffi::Error ffi_product(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, ffi::Buffer<ffi::F32> scale,
                       ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  if (ffi::ByteWidth(w.element_type()) != sizeof(W)) return ffi::Error::InvalidArgument("w has the wrong element width");
  if (xd.size() < 1 || wd.size() < 2) return ffi::Error::InvalidArgument("x needs [..., D] and w [..., F, D]");
  const int64_t d = xd.back(), f = wd[wd.size() - 2];
  if (wd.back() != d) return ffi::Error::InvalidArgument("w's last axis must match x's");
  for (size_t i = 0; i + 2 < wd.size(); ++i)
    if (wd[i] != 1) return ffi::Error::InvalidArgument("w must not carry a batch axis");
  if (scale.element_count() != static_cast<size_t>(f)) return ffi::Error::InvalidArgument("scale needs one entry per row of w");
  const int64_t n = d ? static_cast<int64_t>(x.element_count()) / d : 0;
  if (n == 0 || f == 0) return ffi::Error::Success();
  product(pool, x.typed_data(), static_cast<const W*>(w.untyped_data()), scale.typed_data(), y->typed_data(), n, d, f);
  return ffi::Error::Success();
}

}  // namespace

#define RWKV_PRODUCT(symbol, W)                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, ffi_product<W>,          \
                                ffi::Ffi::Bind()                 \
                                    .Ctx<ffi::ThreadPool>()      \
                                    .Arg<ffi::Buffer<ffi::F32>>() \
                                    .Arg<ffi::AnyBuffer>()       \
                                    .Arg<ffi::Buffer<ffi::F32>>() \
                                    .Ret<ffi::Buffer<ffi::F32>>());

RWKV_PRODUCT(RwkvProductBf16, uint16_t)
RWKV_PRODUCT(RwkvProductInt8, int8_t)
RWKV_PRODUCT(RwkvProductF32, float)
