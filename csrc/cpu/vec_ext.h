// Fixed-width SIMD on GCC vector extensions: the loops of the latent kernels
// (the latent ops, normals.cpp, philox.h) and the one float exp of the CPU
// kernels (exp_approx below; the tile kernels' vector types call it too).
//
// The loops are written on GCC/Clang vector extensions (`float
// __attribute__((vector_size(32)))` and friends), not on intrinsics and not
// left to the auto-vectorizer:
//
// * GCC vectorized the scalar loops for AVX-512 but not for AVX2: it turned
//   exp's clamp into branches, and without AVX-512's masked instructions the
//   if-conversion failed, so the AVX2 copy ran scalar code (~7x slower).
//   Vector-extension code is vector code by construction, at every level.
// * Intrinsics need the target attribute on every function that calls them,
//   so one template could not serve two ISA levels; vector-extension code can
//   be written once (templated on the vector width) and compiled for each
//   level by the FASTVAE_SIMD_VARIANTS copies below.
//
// Every element of a range, the last partial vector included, goes through
// the same vector arithmetic, so results do not depend on an element's
// position; across ISA levels they differ at most by FMA contraction (AVX2
// and AVX-512 contract alike; the generic SSE2 level has no FMA).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "isa.h"

// Vector values are passed between always-inline helpers only, so the ABI
// of 32/64-byte vector arguments in generic-target code (what -Wpsabi warns
// about; GCC still prints one such note per file) never matters.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastvae {
namespace cpu {
namespace simd {

template <typename T, int N>
struct VecOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};

// N lanes of T.
template <typename T, int N>
using Vec = typename VecOf<T, N>::type;

template <typename V>
using elem_t = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V&>()[0])>>;

template <typename V>
constexpr int lanes_of = static_cast<int>(sizeof(V) / sizeof(elem_t<V>));

// The integer vector with V's lane count and lane size (masks, bit patterns).
template <typename V>
using mask_t = Vec<std::conditional_t<sizeof(elem_t<V>) == 4, int32_t, int64_t>, lanes_of<V>>;

// Vector bytes of each ISA level: SSE2 (the x86-64 baseline; any target
// lowers 16-byte vectors), AVX2, AVX-512.
constexpr int kGenericBytes = 16;
constexpr int kAvx2Bytes = 32;
constexpr int kAvx512Bytes = 64;

// x in every lane. Written as a shuffle: GCC 12 builds `V{} + x` (and any
// vector-scalar operation on a run-time scalar) lane by lane in 32/64-byte
// code for a target-attribute function (16 masked broadcasts for AVX-512),
// a shuffle of lane 0 becomes one vpbroadcastd.
template <typename V, int... k>
FASTVAE_INLINE V splat_impl(V v, std::integer_sequence<int, k...>) {
#if defined(__clang__)
  return __builtin_shufflevector(v, v, (k * 0)...);
#else
  return __builtin_shuffle(v, mask_t<V>{(k * 0)...});
#endif
}

template <typename V>
FASTVAE_INLINE V splat(elem_t<V> x) {
  V v = {};
  v[0] = x;
  return splat_impl(v, std::make_integer_sequence<int, lanes_of<V>>());
}

template <typename V, int... k>
FASTVAE_INLINE V iota_impl(std::integer_sequence<int, k...>) {
  return V{static_cast<elem_t<V>>(k)...};
}

// (0, 1, 2, ...).
template <typename V>
FASTVAE_INLINE V iota() {
  return iota_impl<V>(std::make_integer_sequence<int, lanes_of<V>>());
}

// Lane count tag of a whole vector; a partial one is an int64_t count.
struct Full {};

template <typename V, typename T>
FASTVAE_INLINE V load(const T* p, Full) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

// The first n lanes from p, the others 0.
template <typename V, typename T>
FASTVAE_INLINE V load(const T* p, int64_t n) {
  V v = {};
  for (int64_t l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

template <typename V, typename T>
FASTVAE_INLINE void store(T* p, V v, Full) {
  std::memcpy(p, &v, sizeof(V));
}

template <typename V, typename T>
FASTVAE_INLINE void store(T* p, V v, int64_t n) {
  for (int64_t l = 0; l < n; ++l) p[l] = v[l];
}

// v with the lanes from n on zeroed (Full: v itself).
template <typename V>
FASTVAE_INLINE V head(V v, Full) {
  return v;
}

template <typename V>
FASTVAE_INLINE V head(V v, int64_t n) {
  for (int l = static_cast<int>(n); l < lanes_of<V>; ++l) v[l] = 0;
  return v;
}

// After a lambda's parameter list: the lambda is always inlined. Vector code
// must be, or GCC may compile a lambda on its own for the generic target,
// with another ABI for vector results than its AVX2/AVX-512 caller.
#define FASTVAE_LAMBDA __attribute__((always_inline))

// body(i, n) for i = i0, i0 + N, ... over [i0, i1): n is Full() for whole
// vectors and then, if lanes are left, their count.
template <int N, typename Body>
FASTVAE_INLINE void for_lanes(int64_t i0, int64_t i1, const Body& body) {
  int64_t i = i0;
  for (; i + N <= i1; i += N) body(i, Full());
  if (i < i1) body(i, i1 - i);
}

// fn(W()) with W = V halved while it has more lanes than a row of Z elements
// (down to 16 bytes), so that loops over short rows run on whole vectors
// (Z = 8 on AVX-512: 8-lane vectors rather than a partial 16-lane one).
template <typename V, typename Fn>
FASTVAE_INLINE void with_row_vector(int64_t Z, const Fn& fn) {
  if constexpr (sizeof(V) > kGenericBytes) {
    if (Z < lanes_of<V>) {
      with_row_vector<Vec<elem_t<V>, lanes_of<V> / 2>>(Z, fn);
      return;
    }
  }
  fn(V{});
}

// Sum of the lanes, halving the vector at each step.
template <typename V>
FASTVAE_INLINE elem_t<V> hsum(V v) {
  constexpr int N = lanes_of<V>;
  if constexpr (N == 2) {
    return v[0] + v[1];
  } else {
    using H = Vec<elem_t<V>, N / 2>;
    H lo, hi;
    std::memcpy(&lo, &v, sizeof(H));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(H), sizeof(H));
    return hsum(lo + hi);
  }
}

template <typename V>
FASTVAE_INLINE bool any_nan(V v) {
  const mask_t<V> nan = v != v;
  bool any = false;
  for (int l = 0; l < lanes_of<V>; ++l) any |= nan[l] != 0;
  return any;
}

// Square roots of float lanes, lane by lane: with -fno-math-errno (setup.py)
// GCC emits one vector sqrt.
template <typename V>
FASTVAE_INLINE V sqrtf(V x) {
  for (int l = 0; l < lanes_of<V>; ++l) x[l] = __builtin_sqrtf(x[l]);
  return x;
}

// --- interleaving: out[4 l + m] = v_m[l] ------------------------------------

// Lanes (a0, b0, a1, b1, ...) of the low (kHigh: high) halves of a and b.
template <bool kHigh, typename V, int... k>
FASTVAE_INLINE V zip_impl(V a, V b, std::integer_sequence<int, k...>) {
  constexpr int N = lanes_of<V>;
#if defined(__clang__)
  return __builtin_shufflevector(a, b, (((k & 1) ? N : 0) + (k >> 1) + (kHigh ? N / 2 : 0))...);
#else
  return __builtin_shuffle(a, b, mask_t<V>{(((k & 1) ? N : 0) + (k >> 1) + (kHigh ? N / 2 : 0))...});
#endif
}

template <bool kHigh, typename V>
FASTVAE_INLINE V zip(V a, V b) {
  return zip_impl<kHigh>(a, b, std::make_integer_sequence<int, lanes_of<V>>());
}

// The 4 N floats of a, b, c, d (N lanes each) interleaved into out[0 .. 4N).
template <int N>
FASTVAE_INLINE void interleave4(Vec<float, N> a, Vec<float, N> b, Vec<float, N> c, Vec<float, N> d,
                                float* out) {
  using F = Vec<float, N>;
  using D = Vec<double, N / 2>;  // pairs of floats moved as one 64-bit lane
  const D ab_lo = (D)zip<false>(a, b), ab_hi = (D)zip<true>(a, b);
  const D cd_lo = (D)zip<false>(c, d), cd_hi = (D)zip<true>(c, d);
  store<F>(out, (F)zip<false>(ab_lo, cd_lo), Full());
  store<F>(out + N, (F)zip<true>(ab_lo, cd_lo), Full());
  store<F>(out + 2 * N, (F)zip<false>(ab_hi, cd_hi), Full());
  store<F>(out + 3 * N, (F)zip<true>(ab_hi, cd_hi), Full());
}

// --- float math ----------------------------------------------------------------

template <typename F>
FASTVAE_INLINE F select(mask_t<F> m, F a, F b) {
  return m ? a : b;
}

// e^x for float lanes, branch-free (the tile kernels' vector types code the
// same algorithm with their ISA's instructions, csrc/cpu/simd.h): range reduction by n = round(x log2 e)
// (the 1.5 * 2^23 trick) in two steps of ln 2 (Cody-Waite), a Cephes-style
// polynomial (~1e-7 relative), 2^n through the exponent bits. x is clamped
// to [-87, 88], so about 1.6e-38 .. 1.7e38 (callers that need 0 / inf past
// that handle it themselves); NaN propagates. glibc's scalar expf is an
// opaque call that stops vectorization. F may be any float vector-extension
// type, __m256 and __m512 included.
struct ExpPoly {
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;  // ln 2 in two parts (Cody-Waite)
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kLo = -87.0f, kHi = 88.0f;  // the clamp
  static constexpr float kRound = 12582912.0f;       // 1.5 * 2^23
  // exp(r) ~ 1 + r + r^2 (c5 + r (c4 + r (c3 + r (c2 + r (c1 + r c0)))))
  static constexpr float c0 = 1.9875691500e-4f, c1 = 1.3981999507e-3f, c2 = 8.3334519073e-3f,
                         c3 = 4.1665795894e-2f, c4 = 1.6666665459e-1f, c5 = 5.0000001201e-1f;
};

template <typename F>
FASTVAE_INLINE F exp_approx(F x) {
  using I = mask_t<F>;
  using P = ExpPoly;
  x = select(x < P::kLo, splat<F>(P::kLo), x);
  x = select(x > P::kHi, splat<F>(P::kHi), x);
  const F t = x * P::kLog2e;
  const F n = (t + P::kRound) - P::kRound;
  F r = x - n * P::kLn2Hi;
  r = r - n * P::kLn2Lo;
  F p = splat<F>(P::c0);
  p = p * r + P::c1;
  p = p * r + P::c2;
  p = p * r + P::c3;
  p = p * r + P::c4;
  p = p * r + P::c5;
  p = p * r * r + r + 1.0f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  return p * (F)bits;
}

}  // namespace simd
}  // namespace cpu
}  // namespace fastvae

// FASTVAE_SIMD_VARIANTS(NAME, BODY, (params...), (args...)) defines the
// function template NAME<scalar_t>(params...) that runs
// BODY<scalar_t, kBytes>(args...) compiled for the best ISA level of this CPU
// (FASTVAE_CPU_ISA overrides), kBytes being that level's vector size. BODY
// must be FASTVAE_INLINE and use only vector-extension code (no intrinsics).
#ifdef FASTVAE_X86_DISPATCH
#define FASTVAE_SIMD_VARIANTS(NAME, BODY, PARAMS, ARGS)                                          \
  template <typename scalar_t>                                                                 \
  FASTVAE_ISA_AVX512 void NAME##_avx512 PARAMS {                                               \
    BODY<scalar_t, ::fastvae::cpu::simd::kAvx512Bytes> ARGS;                                   \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  FASTVAE_ISA_AVX2 void NAME##_avx2 PARAMS {                                                   \
    BODY<scalar_t, ::fastvae::cpu::simd::kAvx2Bytes> ARGS;                                     \
  }                                                                                            \
  template <typename scalar_t>                                                                 \
  void NAME PARAMS {                                                                           \
    switch (::fastvae::cpu::cpu_isa()) {                                                       \
      case ::fastvae::cpu::Isa::Avx512:                                                        \
        NAME##_avx512<scalar_t> ARGS;                                                          \
        return;                                                                                \
      case ::fastvae::cpu::Isa::Avx2:                                                          \
        NAME##_avx2<scalar_t> ARGS;                                                            \
        return;                                                                                \
      default:                                                                                 \
        BODY<scalar_t, ::fastvae::cpu::simd::kGenericBytes> ARGS;                              \
    }                                                                                          \
  }
#else
#define FASTVAE_SIMD_VARIANTS(NAME, BODY, PARAMS, ARGS) \
  template <typename scalar_t>                          \
  void NAME PARAMS {                                    \
    BODY<scalar_t, ::fastvae::cpu::simd::kGenericBytes> ARGS; \
  }
#endif
