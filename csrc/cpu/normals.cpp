// Blocks of Philox4x32-10 + Box-Muller normals (the recipe and its vector
// code: philox.h).
//
// One loop per ISA level, N counters (lanes) at a time: the Philox rounds,
// then Box-Muller and the interleaving of the four normals per counter, in
// the vector-extension code of philox.h shared by all levels. The rounds are
// in intrinsics on AVX2 and AVX-512: vpmuludq gives the high and low words of
// half the 32x32-bit products at once (even/odd lanes), two blends put them
// in place. (In vector extensions GCC makes each product from three 64-bit
// multiplies: that portable form is the generic level's.) A last partial
// group of counters is computed whole and stored in part, so every normal
// goes through the same arithmetic; AVX2 and AVX-512 agree bit for bit.
#include "normals.h"

#include "philox.h"

#ifdef FASTVAE_X86_DISPATCH
// GCC 12 reports the deliberately uninitialized pass-through operand of its
// own unmasked AVX-512 intrinsics (_mm512_undefined_epi32) as "may be used
// uninitialized"; that warning is silenced inside these headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace fastvae {
namespace cpu {
namespace philox {
namespace {

// The four Philox words of counters c0 + t, t < nc (rounded up to whole
// groups of N counters; nc <= kBlockCounters, a multiple of N).
struct Words {
  alignas(64) uint32_t x[4][kBlockCounters];
};

// Box-Muller on the words of counters t < nc into buf[0 .. 4 nc), N at a time.
// (In a second pass rather than right after each group's rounds: ~5% faster
// on AVX-512, where both together leave too few registers.)
template <int N>
FASTVAE_INLINE void box_muller_block(const Words& w, int64_t nc, float* buf) {
  static_assert(kBlockCounters % N == 0, "whole groups of counters fill a block");
  for (int64_t t = 0; t < nc; t += N) {
    const U<N> x0 = simd::load<U<N>>(w.x[0] + t, simd::Full()), x1 = simd::load<U<N>>(w.x[1] + t, simd::Full());
    const U<N> x2 = simd::load<U<N>>(w.x[2] + t, simd::Full()), x3 = simd::load<U<N>>(w.x[3] + t, simd::Full());
    if (t + N <= nc) {
      box_muller<N>(x0, x1, x2, x3, buf + 4 * t, simd::Full());
    } else {
      box_muller<N>(x0, x1, x2, x3, buf + 4 * t, nc - t);
    }
  }
}

template <int N>
FASTVAE_INLINE void store_words(Words& w, int64_t t, U<N> x0, U<N> x1, U<N> x2, U<N> x3) {
  simd::store(w.x[0] + t, x0, simd::Full());
  simd::store(w.x[1] + t, x1, simd::Full());
  simd::store(w.x[2] + t, x2, simd::Full());
  simd::store(w.x[3] + t, x3, simd::Full());
}

// --- generic: 64-bit vector lanes -------------------------------------------

void normals_generic(Key key, int64_t c0, int64_t nc, float* buf) {
  constexpr int N = simd::kGenericBytes / 4;
  Words w;
  for (int64_t t = 0; t < nc; t += N) {
    U<N> x0, x1, x2, x3;
    counter_words<N>(static_cast<uint64_t>(c0 + t), x0, x1);
    philox4x32_10<N>(key, x0, x1, x2, x3);
    store_words<N>(w, t, x0, x1, x2, x3);
  }
  box_muller_block<N>(w, nc, buf);
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
  Words w;
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
    store_words<N>(w, t, (U<N>)w0, (U<N>)w1, (U<N>)w2, (U<N>)w3);
  }
  box_muller_block<N>(w, nc, buf);
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
  Words w;
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
    store_words<N>(w, t, (U<N>)w0, (U<N>)w1, (U<N>)w2, (U<N>)w3);
  }
  box_muller_block<N>(w, nc, buf);
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
