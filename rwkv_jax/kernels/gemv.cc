// Products of activations with half- and quarter-width weights, streamed at their width.
//
// y[n, f] = scale[f] * sum_d x[n, d] * w[f, d] for float32 x [N, D], weights stored one output per
// row, w [F, D] (bfloat16 or int8; scale [F], all ones for bfloat16), float32 accumulation. Each
// of XLA's intra-op threads owns a block of rows and reads it front to back, so every weight byte
// is read once per call and in order: at batch 1 the product runs at the memory's speed, not at
// the width of a float32 copy of the weights.
#include <atomic>
#include <cstdint>
#include <cstring>

#include <immintrin.h>
#include <thread>

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

#ifdef __AVX512F__
// 16 weights widened to float32 lanes.
inline __m512 widen16(const uint16_t* w) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w))), 16));
}
inline __m512 widen16(const int8_t* w) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))));
}

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

// Splits the rows over XLA's intra-op threads; the calling thread takes the first part and
// waits for the others.
template <typename W>
void parallel_rows(ffi::ThreadPool& pool, const float* x, const W* w, const float* scale, float* y,
                   int64_t n, int64_t d, int64_t f) {
  int64_t parts = pool.num_threads();
  if (parts > f / kMinRowsPerTask) parts = f / kMinRowsPerTask;
  if (parts <= 1) return rows(x, w, scale, y, n, d, f, 0, f);
  std::atomic<int64_t> pending(parts - 1);
  const int64_t per = (f + parts - 1) / parts;
  for (int64_t part = 1; part < parts; ++part) {
    const int64_t begin = part * per, end = begin + per < f ? begin + per : f;
    pool.Schedule([=, &pending] {
      rows(x, w, scale, y, n, d, f, begin, end);
      pending.fetch_sub(1, std::memory_order_release);
    });
  }
  rows(x, w, scale, y, n, d, f, 0, per);
  while (pending.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

template <ffi::DataType T, typename W>
ffi::Error product(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<T> w,
                   ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() < 1 || wd.size() < 2) return ffi::Error::InvalidArgument("x needs [..., D] and w [..., F, D]");
  const int64_t d = xd.back(), f = wd[wd.size() - 2];
  if (wd.back() != d) return ffi::Error::InvalidArgument("w's last axis must match x's");
  for (size_t i = 0; i + 2 < wd.size(); ++i)
    if (wd[i] != 1) return ffi::Error::InvalidArgument("w must not carry a batch axis");
  if (scale.element_count() != static_cast<size_t>(f)) return ffi::Error::InvalidArgument("scale needs one entry per row of w");
  const int64_t n = d ? static_cast<int64_t>(x.element_count()) / d : 0;
  parallel_rows(pool, x.typed_data(), reinterpret_cast<const W*>(w.typed_data()), scale.typed_data(),
                y->typed_data(), n, d, f);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RwkvProductBf16, (product<ffi::BF16, uint16_t>),
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(RwkvProductInt8, (product<ffi::S8, int8_t>),
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
