// Blocks of Philox4x32-10 + Box-Muller normals (see philox.h for the recipe).
//
// One loop per ISA level, N counters (lanes) at a time: the Philox rounds,
// then Box-Muller and the interleaving of the four normals per counter in
// vector-extension code shared by all levels (latent_simd.h). The rounds are
// in intrinsics on AVX2 and AVX-512: vpmuludq gives the high and low words of
// half the 32x32-bit products at once (even/odd lanes), two blends put them
// in place. (Written in vector extensions, GCC makes each product from three
// 64-bit multiplies; its auto-vectorized scalar loop, from zero-extensions
// and a second multiply for the low words, ran ~25% slower on AVX-512.) The
// generic level runs the same rounds on 64-bit vector lanes. A last partial
// group of counters is computed whole and stored in part, so every normal
// goes through the same arithmetic; AVX2 and AVX-512 agree bit for bit.
#include "normals.h"

#include "latent_simd.h"

#ifdef FASTVAE_X86_DISPATCH
#include <immintrin.h>
#endif

namespace fastvae {
namespace cpu {
namespace philox {
namespace {

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

// Triton's uint_to_uniform_float (philox::uint_to_uniform): v < 0 ? ~v : v, times 2^-31.
template <int N>
FASTVAE_INLINE F<N> uniform(U<N> x) {
  using I = simd::Vec<int32_t, N>;
  const I v = (I)x;
  return __builtin_convertvector(v ^ (v >> 31), F<N>) * 4.6566127342e-10f;
}

// Box-Muller on the words of N counters (philox::normal4); out[4 l + m] =
// normal m of counter l, for the first n counters (Full: all N).
template <int N, typename Count>
FASTVAE_INLINE void box_muller(U<N> x0, U<N> x1, U<N> x2, U<N> x3, float* out, Count n) {
  const F<N> lo = simd::splat<F<N>>(1.0e-7f);
  F<N> u0 = uniform<N>(x0), u2 = uniform<N>(x2);
  u0 = simd::select(u0 < lo, lo, u0);
  u2 = simd::select(u2 < lo, lo, u2);
  const F<N> r01 = simd::sqrtf(-2.0f * simd::log_pos(u0));
  const F<N> r23 = simd::sqrtf(-2.0f * simd::log_pos(u2));
  F<N> s01, c01, s23, c23;
  simd::sincos_reduced(6.283185307179586f * uniform<N>(x1), s01, c01);
  simd::sincos_reduced(6.283185307179586f * uniform<N>(x3), s23, c23);
  if constexpr (std::is_same_v<Count, simd::Full>) {
    simd::interleave4<N>(r01 * c01, r01 * s01, r23 * c23, r23 * s23, out);
  } else {
    alignas(64) float all[4 * N];
    simd::interleave4<N>(r01 * c01, r01 * s01, r23 * c23, r23 * s23, all);
    std::memcpy(out, all, 4 * n * sizeof(float));
  }
}

// Box-Muller of the counter group at t (N counters) into buf, whole or in part.
template <int N>
FASTVAE_INLINE void emit(U<N> x0, U<N> x1, U<N> x2, U<N> x3, int64_t t, int64_t nc, float* buf) {
  if (t + N <= nc) {
    box_muller<N>(x0, x1, x2, x3, buf + 4 * t, simd::Full());
  } else {
    box_muller<N>(x0, x1, x2, x3, buf + 4 * t, nc - t);
  }
}

// --- generic: 64-bit vector lanes -------------------------------------------

constexpr int kGenericLanes = simd::kGenericBytes / 4;

// High and low words of a[l] * k.
template <int N>
FASTVAE_INLINE void mulhilo(U<N> a, uint32_t k, U<N>& hi, U<N>& lo) {
  using Q = simd::Vec<uint64_t, N / 2>;
  const Q a64 = (Q)a;
  const Q even = (a64 & 0xffffffffull) * static_cast<uint64_t>(k);  // lanes 0, 2, ...
  const Q odd = (a64 >> 32) * static_cast<uint64_t>(k);              // lanes 1, 3, ...
  hi = (U<N>)((even >> 32) | (odd & 0xffffffff00000000ull));
  lo = (U<N>)((even & 0xffffffffull) | (odd << 32));
}

void normals_generic(Key key, int64_t c0, int64_t nc, float* buf) {
  constexpr int N = kGenericLanes;
  for (int64_t t = 0; t < nc; t += N) {
    U<N> w0, w1, w2 = {}, w3 = {};
    counter_words<N>(static_cast<uint64_t>(c0 + t), w0, w1);
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
    emit<N>(w0, w1, w2, w3, t, nc, buf);
  }
}

#ifdef FASTVAE_X86_DISPATCH

// --- AVX2: 8 counters -------------------------------------------------------

FASTVAE_ISA_AVX2 FASTVAE_INLINE void mulhilo8(__m256i a, __m256i k, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, k);                        // lanes 0, 2, ... as 64-bit
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), k);  // lanes 1, 3, ...
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

FASTVAE_ISA_AVX2 void normals_avx2(Key key, int64_t c0, int64_t nc, float* buf) {
  constexpr int N = 8;
  const __m256i round_a = _mm256_set1_epi32(static_cast<int>(kRoundA));
  const __m256i round_b = _mm256_set1_epi32(static_cast<int>(kRoundB));
  for (int64_t t = 0; t < nc; t += N) {
    U<N> c_lo, c_hi;
    counter_words<N>(static_cast<uint64_t>(c0 + t), c_lo, c_hi);
    __m256i w0 = (__m256i)c_lo, w1 = (__m256i)c_hi;
    __m256i w2 = _mm256_setzero_si256(), w3 = _mm256_setzero_si256();
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; ++r) {
      __m256i hi_b, lo_b, hi_a, lo_a;
      mulhilo8(w2, round_b, hi_b, lo_b);
      mulhilo8(w0, round_a, hi_a, lo_a);
      w0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, w1), _mm256_set1_epi32(static_cast<int>(k0)));
      w2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, w3), _mm256_set1_epi32(static_cast<int>(k1)));
      w1 = lo_b;
      w3 = lo_a;
      k0 += kKeyA;
      k1 += kKeyB;
    }
    emit<N>((U<N>)w0, (U<N>)w1, (U<N>)w2, (U<N>)w3, t, nc, buf);
  }
}

// --- AVX-512: 16 counters ---------------------------------------------------

FASTVAE_ISA_AVX512 FASTVAE_INLINE void mulhilo16(__m512i a, __m512i k, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, k);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), k);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

FASTVAE_ISA_AVX512 void normals_avx512(Key key, int64_t c0, int64_t nc, float* buf) {
  constexpr int N = 16;
  const __m512i round_a = _mm512_set1_epi32(static_cast<int>(kRoundA));
  const __m512i round_b = _mm512_set1_epi32(static_cast<int>(kRoundB));
  alignas(64) uint32_t words[4][kBlockCounters];
  for (int64_t t = 0; t < nc; t += N) {
    U<N> c_lo, c_hi;
    counter_words<N>(static_cast<uint64_t>(c0 + t), c_lo, c_hi);
    __m512i w0 = (__m512i)c_lo, w1 = (__m512i)c_hi;
    __m512i w2 = _mm512_setzero_si512(), w3 = _mm512_setzero_si512();
    uint32_t k0 = key.k0, k1 = key.k1;
    for (int r = 0; r < 10; ++r) {
      __m512i hi_b, lo_b, hi_a, lo_a;
      mulhilo16(w2, round_b, hi_b, lo_b);
      mulhilo16(w0, round_a, hi_a, lo_a);
      // 0x96: three-way xor.
      w0 = _mm512_ternarylogic_epi32(hi_b, w1, _mm512_set1_epi32(static_cast<int>(k0)), 0x96);
      w2 = _mm512_ternarylogic_epi32(hi_a, w3, _mm512_set1_epi32(static_cast<int>(k1)), 0x96);
      w1 = lo_b;
      w3 = lo_a;
      k0 += kKeyA;
      k1 += kKeyB;
    }
    _mm512_store_si512(words[0] + t, w0);
    _mm512_store_si512(words[1] + t, w1);
    _mm512_store_si512(words[2] + t, w2);
    _mm512_store_si512(words[3] + t, w3);
  }
  for (int64_t t = 0; t < nc; t += N) {
    emit<N>(simd::load<U<N>>(words[0] + t, simd::Full()), simd::load<U<N>>(words[1] + t, simd::Full()),
            simd::load<U<N>>(words[2] + t, simd::Full()), simd::load<U<N>>(words[3] + t, simd::Full()), t, nc, buf);
  }
}

#endif

}  // namespace

void normals(Key key, int64_t c0, int64_t nc, float* buf) {
#ifdef FASTVAE_X86_DISPATCH
  switch (cpu_isa()) {
    case Isa::Avx512:
      normals_avx512(key, c0, nc, buf);
      return;
    case Isa::Avx2:
      normals_avx2(key, c0, nc, buf);
      return;
    default:
      break;
  }
#endif
  normals_generic(key, c0, nc, buf);
}

}  // namespace philox
}  // namespace cpu
}  // namespace fastvae
