// Counter-based standard-normal draws: Philox4x32-10 + Box-Muller, the recipe
// of Triton's tl.randn4x(seed, counter), so CPU and GPU draw the same eps for
// one seed and a backward pass can regenerate eps instead of storing it.
//
//   key     = (seed & 0xffffffff, seed >> 32)              (seed: int64, as uint64)
//   counter = (c & 0xffffffff, c >> 32, 0, 0)
//   (x0, x1, x2, x3) = Philox4x32-10(counter, key)
//   u = uint_to_uniform(x)                                 (int32 bit pattern, folded)
//   r = sqrt(-2 log max(u0, 1e-7)), t = 2 pi u1  ->  n0 = r cos t, n1 = r sin t
//   (n2, n3 likewise from x2, x3)                          (fp32 throughout)
//
// Element i of a sample is n_(i % 4) of counter i / 4: one Philox call gives
// four normals (tl.randn would spend one call per normal and use half of it).
// Philox and the uniform conversion are exact integer/IEEE operations and
// match Triton bit for bit. log/sin/cos are branch-free Cephes-style float
// polynomials; they differ from the libdevice/numpy functions Triton uses by
// an ulp or two, so CPU and Triton eps agree to ~1e-6 absolute rather than
// bit for bit. fastvae/ops/_philox.py is the same stream in torch ops.
//
// The functions below work on N counters at once (vectors of vec_ext.h);
// normals.cpp runs them per ISA level.
#pragma once

#include <cstdint>
#include <cstring>

#include "vec_ext.h"

namespace fastvae {
namespace cpu {
namespace philox {

constexpr uint32_t kKeyA = 0x9E3779B9u;
constexpr uint32_t kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u;
constexpr uint32_t kRoundB = 0xCD9E8D57u;

struct Key {
  uint32_t k0, k1;
  explicit Key(int64_t seed)
      : k0(static_cast<uint32_t>(static_cast<uint64_t>(seed))),
        k1(static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32)) {}
};

template <int N>
using U = simd::Vec<uint32_t, N>;
template <int N>
using F = simd::Vec<float, N>;

// Counters base .. base + N - 1 as (low word, high word).
template <int N>
FASTVAE_INLINE void counter_words(uint64_t base, U<N>& w0, U<N>& w1) {
  const U<N> lo = simd::splat<U<N>>(static_cast<uint32_t>(base));
  w0 = lo + simd::iota<U<N>>();
  // A low word that wrapped around carries into the high word (the mask is -1).
  w1 = simd::splat<U<N>>(static_cast<uint32_t>(base >> 32)) - (U<N>)(w0 < lo);
}

// High and low words of a[l] * k on 64-bit lanes (the portable form; the AVX2
// and AVX-512 loops use vpmuludq, see normals.cpp).
template <int N>
FASTVAE_INLINE void mulhilo(U<N> a, uint32_t k, U<N>& hi, U<N>& lo) {
  using Q = simd::Vec<uint64_t, N / 2>;
  const Q a64 = (Q)a;
  const Q even = (a64 & 0xffffffffull) * static_cast<uint64_t>(k);  // lanes 0, 2, ...
  const Q odd = (a64 >> 32) * static_cast<uint64_t>(k);              // lanes 1, 3, ...
  hi = (U<N>)((even >> 32) | (odd & 0xffffffff00000000ull));
  lo = (U<N>)((even & 0xffffffffull) | (odd << 32));
}

// Ten Philox rounds on counters (w0, w1, 0, 0); w0..w3 receive the words.
template <int N>
FASTVAE_INLINE void philox4x32_10(Key key, U<N>& w0, U<N>& w1, U<N>& w2, U<N>& w3) {
  w2 = U<N>{};
  w3 = U<N>{};
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int r = 0; r < 10; ++r) {
    U<N> hi_b, lo_b, hi_a, lo_a;
    mulhilo<N>(w2, kRoundB, hi_b, lo_b);
    mulhilo<N>(w0, kRoundA, hi_a, lo_a);
    w0 = hi_b ^ w1 ^ simd::splat<U<N>>(k0);
    w2 = hi_a ^ w3 ^ simd::splat<U<N>>(k1);
    w1 = lo_b;
    w3 = lo_a;
    k0 += kKeyA;
    k1 += kKeyB;
  }
}

// Triton's uint_to_uniform_float for 32-bit words: the word as int32,
// negatives folded (v < 0 ? ~v : v), times 2^-31: a float in [0, 1).
template <int N>
FASTVAE_INLINE F<N> uint_to_uniform(U<N> x) {
  using I = simd::Vec<int32_t, N>;
  const I v = (I)x;
  return __builtin_convertvector(v ^ (v >> 31), F<N>) * 4.6566127342e-10f;
}

// Natural log for positive normal floats (Cephes logf, ~1 ulp).
template <int N>
FASTVAE_INLINE F<N> log_pos(F<N> x) {
  using I = simd::Vec<int32_t, N>;
  I bits = (I)x;
  I e = ((bits >> 23) & 0xff) - 126;  // x = m * 2^e, m in [0.5, 1)
  bits = (bits & static_cast<int32_t>(0x807fffffu)) | 0x3f000000;
  F<N> m = (F<N>)bits;
  const I small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = simd::select(small, m + m - 1.0f, m - 1.0f);
  const F<N> z = m * m;
  F<N> y = simd::splat<F<N>>(7.0376836292e-2f);
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const F<N> fe = __builtin_convertvector(e, F<N>);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return (m + y) + 0.693359375f * fe;
}

// sin(x) and cos(x) for |x| up to a few thousand (quadrant reduction, Cephes
// polynomials on [-pi/4, pi/4]).
template <int N>
FASTVAE_INLINE void sincos_reduced(F<N> x, F<N>& sin_x, F<N>& cos_x) {
  using I = simd::Vec<int32_t, N>;
  // j = nearest integer to x / (pi/2); r = x - j pi/2 in three exact parts.
  const F<N> j = (x * 0.636619772367581343f + 12582912.0f) - 12582912.0f;
  F<N> r = x - j * 1.5703125f;
  r = r - j * 4.837512969970703125e-4f;
  r = r - j * 7.54978995489188216e-8f;
  const F<N> z = r * r;
  const F<N> c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
                 0.5f * z + 1.0f;
  const F<N> s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  // x = r + q pi/2: cos x = (cos r, -sin r, -cos r, sin r)[q], sin x = (sin r, cos r, -sin r, -cos r)[q].
  const I q = __builtin_convertvector(j, I) & 3;
  const I odd = (q & 1) != 0;
  const F<N> cv = simd::select(odd, s, c);
  const F<N> sv = simd::select(odd, c, s);
  cos_x = simd::select(((q + 1) & 2) != 0, -cv, cv);
  sin_x = simd::select((q & 2) != 0, -sv, sv);
}

// Box-Muller on the words of N counters: out[4 l + m] = normal m of counter
// l, for the first n counters (Full: all N).
template <int N, typename Count>
FASTVAE_INLINE void box_muller(U<N> x0, U<N> x1, U<N> x2, U<N> x3, float* out, Count n) {
  const F<N> lo = simd::splat<F<N>>(1.0e-7f);
  F<N> u0 = uint_to_uniform<N>(x0), u2 = uint_to_uniform<N>(x2);
  u0 = simd::select(u0 < lo, lo, u0);
  u2 = simd::select(u2 < lo, lo, u2);
  const F<N> r01 = simd::sqrtf(-2.0f * log_pos<N>(u0));
  const F<N> r23 = simd::sqrtf(-2.0f * log_pos<N>(u2));
  F<N> s01, c01, s23, c23;
  sincos_reduced<N>(6.283185307179586f * uint_to_uniform<N>(x1), s01, c01);
  sincos_reduced<N>(6.283185307179586f * uint_to_uniform<N>(x3), s23, c23);
  if constexpr (std::is_same_v<Count, simd::Full>) {
    simd::interleave4<N>(r01 * c01, r01 * s01, r23 * c23, r23 * s23, out);
  } else {
    alignas(64) float all[4 * N];
    simd::interleave4<N>(r01 * c01, r01 * s01, r23 * c23, r23 * s23, all);
    std::memcpy(out, all, 4 * n * sizeof(float));
  }
}

}  // namespace philox
}  // namespace cpu
}  // namespace fastvae
