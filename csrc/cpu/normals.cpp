// Blocks of Philox4x32-10 + Box-Muller normals (see philox.h for the recipe).
//
// GCC vectorizes philox::normal4 on its own, but builds each 32x32->64-bit
// product from zero-extensions and 64-bit multiplies and computes the low
// words with a second multiply. The AVX-512 path below gets high and low
// words of 16 products from two vpmuludq (even/odd lanes) and two blends:
// ~25% less time per normal. Box-Muller stays auto-vectorized; the AVX-512
// and AVX2 levels agree bit for bit.
#include "normals.h"

#include <algorithm>

#ifdef FASTVAE_X86_DISPATCH
#include <immintrin.h>
#endif

namespace fastvae {
namespace cpu {
namespace philox {
namespace {

// Box-Muller over the four words of nc counters; buf[4 t + m] = normal m.
template <typename unused_t>
FASTVAE_INLINE void box_muller_body(const uint32_t* __restrict x0, const uint32_t* __restrict x1,
                                    const uint32_t* __restrict x2, const uint32_t* __restrict x3,
                                    int64_t nc, float* __restrict buf) {
#pragma omp simd
  for (int64_t t = 0; t < nc; ++t) {
    const float r01 = __builtin_sqrtf(-2.0f * log_pos(max_nonneg(uint_to_uniform(x0[t]), 1.0e-7f)));
    const float r23 = __builtin_sqrtf(-2.0f * log_pos(max_nonneg(uint_to_uniform(x2[t]), 1.0e-7f)));
    float s01, c01, s23, c23;
    sincos_reduced(6.283185307179586f * uint_to_uniform(x1[t]), s01, c01);
    sincos_reduced(6.283185307179586f * uint_to_uniform(x3[t]), s23, c23);
    buf[4 * t] = r01 * c01;
    buf[4 * t + 1] = r01 * s01;
    buf[4 * t + 2] = r23 * c23;
    buf[4 * t + 3] = r23 * s23;
  }
}

FASTVAE_ISA_VARIANTS(box_muller, box_muller_body,
                     (const uint32_t* x0, const uint32_t* x1, const uint32_t* x2, const uint32_t* x3,
                      int64_t nc, float* buf),
                     (x0, x1, x2, x3, nc, buf))

// Philox4x32-10 and Box-Muller fused in one auto-vectorized loop.
template <typename unused_t>
FASTVAE_INLINE void normals_auto_body(Key key, int64_t c0, int64_t nc, float* __restrict buf) {
  const uint32_t k0 = key.k0, k1 = key.k1;
#pragma omp simd
  for (int64_t t = 0; t < nc; ++t) {
    float n0, n1, n2, n3;
    normal4(k0, k1, static_cast<uint64_t>(c0 + t), n0, n1, n2, n3);
    buf[4 * t] = n0;
    buf[4 * t + 1] = n1;
    buf[4 * t + 2] = n2;
    buf[4 * t + 3] = n3;
  }
}

FASTVAE_ISA_VARIANTS(normals_auto, normals_auto_body, (Key key, int64_t c0, int64_t nc, float* buf),
                     (key, c0, nc, buf))

#ifdef FASTVAE_X86_DISPATCH

// High and low 32-bit words of a[i] * k for 16 uint32 lanes.
FASTVAE_ISA_AVX512 FASTVAE_INLINE void mulhilo16(__m512i a, __m512i k, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, k);                        // lanes 0, 2, ... as 64-bit
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), k);  // lanes 1, 3, ...
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// The four Philox words of counters c0 .. c0 + nc - 1 into x0..x3.
FASTVAE_ISA_AVX512 void philox_words_avx512(Key key, int64_t c0, int64_t nc, uint32_t* x0, uint32_t* x1,
                                            uint32_t* x2, uint32_t* x3) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i round_a = _mm512_set1_epi32(static_cast<int>(kRoundA));
  const __m512i round_b = _mm512_set1_epi32(static_cast<int>(kRoundB));
  int64_t t = 0;
  for (; t + 16 <= nc; t += 16) {
    const uint64_t base = static_cast<uint64_t>(c0 + t);
    const __m512i base_lo = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(base)));
    const __m512i base_hi = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
    __m512i w0 = _mm512_add_epi32(base_lo, lane);
    // A low word that wrapped around carries into the high word.
    const __mmask16 carry = _mm512_cmplt_epu32_mask(w0, base_lo);
    __m512i w1 = _mm512_mask_add_epi32(base_hi, carry, base_hi, _mm512_set1_epi32(1));
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
    _mm512_storeu_si512(x0 + t, w0);
    _mm512_storeu_si512(x1 + t, w1);
    _mm512_storeu_si512(x2 + t, w2);
    _mm512_storeu_si512(x3 + t, w3);
  }
  for (; t < nc; ++t) {
    const uint64_t c = static_cast<uint64_t>(c0 + t);
    philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), key.k0, key.k1, x0[t], x1[t], x2[t],
                  x3[t]);
  }
}

#endif

}  // namespace

void normals(Key key, int64_t c0, int64_t nc, float* buf) {
#ifdef FASTVAE_X86_DISPATCH
  if (cpu_isa() == Isa::Avx512) {
    alignas(64) uint32_t x0[kBlockCounters], x1[kBlockCounters], x2[kBlockCounters], x3[kBlockCounters];
    philox_words_avx512(key, c0, nc, x0, x1, x2, x3);
    box_muller<float>(x0, x1, x2, x3, nc, buf);
    return;
  }
#endif
  normals_auto<float>(key, c0, nc, buf);
}

}  // namespace philox
}  // namespace cpu
}  // namespace fastvae
