// Vector types of the tile kernels (csrc/cpu/tile_kernels.h), one per ISA level.
//
// Each type wraps one register of W lanes of T and the few operations the
// kernels need. The x86 types use intrinsics, so they exist only where the
// including translation unit compiles for that ISA: kernels_avx2.cpp and
// kernels_avx512.cpp define FASTVAE_SIMD_AVX2 / FASTVAE_SIMD_AVX512 inside a
// `#pragma GCC target` region before including this header. VecGeneric is
// plain C++ (arrays the compiler vectorizes with what the baseline ISA has).
//
// exp: the algorithm of vec_ext.h's exp_approx (its constants, ExpPoly),
// coded here with each ISA's own instructions: min/max clamps that keep a
// NaN, AVX-512's scalef. The vector-extension coding turned the clamps into
// compare + blend: 3-10 % slower linear cross-entropy at H = 32. Doubles use
// libm lane by lane.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "vec_ext.h"

#if defined(FASTVAE_SIMD_AVX2) || defined(FASTVAE_SIMD_AVX512)
#include <immintrin.h>
#endif

#define FASTVAE_SIMD_INLINE inline __attribute__((always_inline))

#if defined(FASTVAE_SIMD_AVX2) || defined(FASTVAE_SIMD_AVX512)
// The body of the x86 types' transpose8x8 (AVX instructions, both types):
// three rounds of shuffles turn 8 rows of 8 floats into 8 columns.
#define FASTVAE_TRANSPOSE8X8_PS(s, ls, d, ld)                                                                 \
  do {                                                                                                        \
    __m256 r_[8], t_[8], u_[8];                                                                               \
    for (int k_ = 0; k_ < 8; ++k_) r_[k_] = _mm256_loadu_ps((s) + k_ * (ls));                                 \
    for (int k_ = 0; k_ < 4; ++k_) {                                                                          \
      t_[2 * k_] = _mm256_unpacklo_ps(r_[2 * k_], r_[2 * k_ + 1]);                                            \
      t_[2 * k_ + 1] = _mm256_unpackhi_ps(r_[2 * k_], r_[2 * k_ + 1]);                                        \
    }                                                                                                         \
    for (int h_ = 0; h_ < 2; ++h_) {                                                                          \
      const int b_ = 4 * h_;                                                                                  \
      u_[b_] = _mm256_shuffle_ps(t_[b_], t_[b_ + 2], _MM_SHUFFLE(1, 0, 1, 0));                                \
      u_[b_ + 1] = _mm256_shuffle_ps(t_[b_], t_[b_ + 2], _MM_SHUFFLE(3, 2, 3, 2));                            \
      u_[b_ + 2] = _mm256_shuffle_ps(t_[b_ + 1], t_[b_ + 3], _MM_SHUFFLE(1, 0, 1, 0));                        \
      u_[b_ + 3] = _mm256_shuffle_ps(t_[b_ + 1], t_[b_ + 3], _MM_SHUFFLE(3, 2, 3, 2));                        \
    }                                                                                                         \
    for (int k_ = 0; k_ < 4; ++k_) {                                                                          \
      _mm256_storeu_ps((d) + k_ * (ld), _mm256_permute2f128_ps(u_[k_], u_[k_ + 4], 0x20));                    \
      _mm256_storeu_ps((d) + (k_ + 4) * (ld), _mm256_permute2f128_ps(u_[k_], u_[k_ + 4], 0x31));              \
    }                                                                                                         \
  } while (0)
#endif

namespace fastvae {
namespace cpu {

using simd::ExpPoly;

// ------------------------------------------------------------------ generic --

template <typename T, int Lanes>
struct VecGeneric {
  using scalar = T;
  static constexpr int W = Lanes;
  struct reg {
    T v[Lanes];
  };
  struct mask {
    bool v[Lanes];
  };

  static FASTVAE_SIMD_INLINE reg zero() { return set1(T(0)); }
  static FASTVAE_SIMD_INLINE reg set1(T x) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = x;
    return r;
  }
  static FASTVAE_SIMD_INLINE reg load(const T* p) {
    reg r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static FASTVAE_SIMD_INLINE void store(T* p, reg x) { std::memcpy(p, x.v, sizeof(x.v)); }
  // d[j * ld + i] = s[i * ls + j] for i, j < 8 (an 8 x 8 block transposed).
  static FASTVAE_SIMD_INLINE void transpose8x8(const T* s, int64_t ls, T* d, int64_t ld) {
    for (int i = 0; i < 8; ++i)
      for (int j = 0; j < 8; ++j) d[j * ld + i] = s[i * ls + j];
  }
  // The first n (0 <= n <= W) lanes; the others read as zero / are not written.
  static FASTVAE_SIMD_INLINE reg load_n(const T* p, int n) {
    reg r = zero();
    for (int i = 0; i < n; ++i) r.v[i] = p[i];
    return r;
  }
  static FASTVAE_SIMD_INLINE void store_n(T* p, reg x, int n) {
    for (int i = 0; i < n; ++i) p[i] = x.v[i];
  }
#define FASTVAE_GENERIC_BINARY(NAME, EXPR)                  \
  static FASTVAE_SIMD_INLINE reg NAME(reg a, reg b) {       \
    reg r;                                                  \
    for (int i = 0; i < W; ++i) r.v[i] = EXPR;              \
    return r;                                               \
  }
  FASTVAE_GENERIC_BINARY(add, a.v[i] + b.v[i])
  FASTVAE_GENERIC_BINARY(sub, a.v[i] - b.v[i])
  FASTVAE_GENERIC_BINARY(mul, a.v[i] * b.v[i])
  FASTVAE_GENERIC_BINARY(div, a.v[i] / b.v[i])
  // max/min: a NaN in b is kept (as the x86 versions with the constant first).
  FASTVAE_GENERIC_BINARY(max, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
  FASTVAE_GENERIC_BINARY(min, a.v[i] < b.v[i] ? a.v[i] : b.v[i])
#undef FASTVAE_GENERIC_BINARY
  static FASTVAE_SIMD_INLINE reg fmadd(reg a, reg b, reg c) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static FASTVAE_SIMD_INLINE mask gt(reg a, reg b) {
    mask m;
    for (int i = 0; i < W; ++i) m.v[i] = a.v[i] > b.v[i];
    return m;
  }
  // a > b or either is NaN, per lane (not a <= b).
  static FASTVAE_SIMD_INLINE mask gt_or_nan(reg a, reg b) {
    mask m;
    for (int i = 0; i < W; ++i) m.v[i] = !(a.v[i] <= b.v[i]);
    return m;
  }
  static FASTVAE_SIMD_INLINE bool any(mask m) {
    bool r = false;
    for (int i = 0; i < W; ++i) r = r || m.v[i];
    return r;
  }
  // m ? a : b per lane.
  static FASTVAE_SIMD_INLINE reg select(mask m, reg a, reg b) {
    reg r;
    for (int i = 0; i < W; ++i) r.v[i] = m.v[i] ? a.v[i] : b.v[i];
    return r;
  }
  static FASTVAE_SIMD_INLINE T reduce_add(reg x) {
    T s = 0;
    for (int i = 0; i < W; ++i) s += x.v[i];
    return s;
  }
  static FASTVAE_SIMD_INLINE reg exp(reg x) {
    reg r;
    if constexpr (sizeof(T) == 4) {
      simd::Vec<float, W> v;
      std::memcpy(&v, x.v, sizeof(v));
      v = simd::exp_approx(v);
      std::memcpy(r.v, &v, sizeof(v));
    } else {
      for (int i = 0; i < W; ++i) r.v[i] = std::exp(x.v[i]);
    }
    return r;
  }
  // 1 / x (the x86 types approximate it to ~1 ulp).
  static FASTVAE_SIMD_INLINE reg recip(reg x) { return div(set1(T(1)), x); }
  // tanh: libm for double (accuracy), 2 / (1 + e^-2x) - 1 for float (as the x86 types).
  static FASTVAE_SIMD_INLINE reg tanh(reg x) {
    reg r;
    if constexpr (sizeof(T) == 4) {
      const reg e = exp(mul(x, set1(T(-2))));
      for (int i = 0; i < W; ++i) r.v[i] = T(2) / (T(1) + e.v[i]) - T(1);
    } else {
      for (int i = 0; i < W; ++i) r.v[i] = std::tanh(x.v[i]);
    }
    return r;
  }
};

// --------------------------------------------------------------------- AVX2 --

#ifdef FASTVAE_SIMD_AVX2
struct VecAvx2 {
  using scalar = float;
  static constexpr int W = 8;
  using reg = __m256;
  using mask = __m256;

  static FASTVAE_SIMD_INLINE reg zero() { return _mm256_setzero_ps(); }
  static FASTVAE_SIMD_INLINE reg set1(float x) { return _mm256_set1_ps(x); }
  static FASTVAE_SIMD_INLINE reg load(const float* p) { return _mm256_loadu_ps(p); }
  static FASTVAE_SIMD_INLINE void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  // d[j * ld + i] = s[i * ls + j] for i, j < 8 (an 8 x 8 block transposed).
  static FASTVAE_SIMD_INLINE void transpose8x8(const float* s, int64_t ls, float* d, int64_t ld) {
    FASTVAE_TRANSPOSE8X8_PS(s, ls, d, ld);
  }
  static FASTVAE_SIMD_INLINE __m256i lanes_below(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static FASTVAE_SIMD_INLINE reg load_n(const float* p, int n) { return _mm256_maskload_ps(p, lanes_below(n)); }
  static FASTVAE_SIMD_INLINE void store_n(float* p, reg x, int n) { _mm256_maskstore_ps(p, lanes_below(n), x); }
  static FASTVAE_SIMD_INLINE reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  // maxps returns its second operand when either is NaN: a NaN in b is kept.
  static FASTVAE_SIMD_INLINE reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static FASTVAE_SIMD_INLINE mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static FASTVAE_SIMD_INLINE mask gt_or_nan(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_NLE_UQ); }
  static FASTVAE_SIMD_INLINE bool any(mask m) { return _mm256_movemask_ps(m) != 0; }
  static FASTVAE_SIMD_INLINE reg select(mask m, reg a, reg b) { return _mm256_blendv_ps(b, a, m); }
  static FASTVAE_SIMD_INLINE float reduce_add(reg x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // 1 / x for x >= 1 (the sigmoid denominators): rcpps (12 bits) and one
  // Newton step, ~1 ulp -- a fraction of vdivps's cost on the LSTM cell.
  static FASTVAE_SIMD_INLINE reg recip(reg x) {
    const reg r = _mm256_rcp_ps(x);
    return _mm256_mul_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(2.0f)));
  }
  // tanh(x) = 2 / (1 + e^-2x) - 1: one exponential, saturates to +-1 exactly.
  static FASTVAE_SIMD_INLINE reg tanh(reg x) {
    const reg e = exp(mul(x, set1(-2.0f)));
    return fmadd(set1(2.0f), recip(add(set1(1.0f), e)), set1(-1.0f));
  }
  static FASTVAE_SIMD_INLINE reg exp(reg x) {
    using P = ExpPoly;
    x = _mm256_max_ps(_mm256_set1_ps(P::kLo), x);
    x = _mm256_min_ps(_mm256_set1_ps(P::kHi), x);
    // n = round(x * log2e) by the 1.5 * 2^23 trick; j's low mantissa bits hold n.
    const reg magic = _mm256_set1_ps(P::kRound);
    const reg j = _mm256_fmadd_ps(x, _mm256_set1_ps(P::kLog2e), magic);
    const reg n = _mm256_sub_ps(j, magic);
    reg r = _mm256_fnmadd_ps(n, _mm256_set1_ps(P::kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(P::kLn2Lo), r);
    reg p = _mm256_set1_ps(P::c0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P::c1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P::c2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P::c3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P::c4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(P::c5));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n: (n + 127) << 23; j's bits are 0x4B400000 + n, whose shift by 23 leaves n << 23.
    const __m256i bits = _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(j), 23), _mm256_set1_epi32(127 << 23));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  }
};
#endif

// ------------------------------------------------------------------ AVX-512 --

#ifdef FASTVAE_SIMD_AVX512
struct VecAvx512 {
  using scalar = float;
  static constexpr int W = 16;
  using reg = __m512;
  using mask = __mmask16;

  static FASTVAE_SIMD_INLINE reg zero() { return _mm512_setzero_ps(); }
  static FASTVAE_SIMD_INLINE reg set1(float x) { return _mm512_set1_ps(x); }
  static FASTVAE_SIMD_INLINE reg load(const float* p) { return _mm512_loadu_ps(p); }
  static FASTVAE_SIMD_INLINE void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  // d[j * ld + i] = s[i * ls + j] for i, j < 8 (an 8 x 8 block transposed).
  static FASTVAE_SIMD_INLINE void transpose8x8(const float* s, int64_t ls, float* d, int64_t ld) {
    FASTVAE_TRANSPOSE8X8_PS(s, ls, d, ld);
  }
  static FASTVAE_SIMD_INLINE __mmask16 lanes_below(int n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
  }
  static FASTVAE_SIMD_INLINE reg load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes_below(n), p); }
  static FASTVAE_SIMD_INLINE void store_n(float* p, reg x, int n) { _mm512_mask_storeu_ps(p, lanes_below(n), x); }
  static FASTVAE_SIMD_INLINE reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static FASTVAE_SIMD_INLINE reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static FASTVAE_SIMD_INLINE mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static FASTVAE_SIMD_INLINE mask gt_or_nan(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_NLE_UQ); }
  static FASTVAE_SIMD_INLINE bool any(mask m) { return m != 0; }
  static FASTVAE_SIMD_INLINE reg select(mask m, reg a, reg b) { return _mm512_mask_blend_ps(m, b, a); }
  static FASTVAE_SIMD_INLINE float reduce_add(reg x) { return _mm512_reduce_add_ps(x); }
  // 1 / x for x >= 1: rcp14 and one Newton step, ~1 ulp (vdivps is ~5x slower).
  static FASTVAE_SIMD_INLINE reg recip(reg x) {
    const reg r = _mm512_rcp14_ps(x);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.0f)));
  }
  // tanh(x) = 2 / (1 + e^-2x) - 1: one exponential, saturates to +-1 exactly.
  static FASTVAE_SIMD_INLINE reg tanh(reg x) {
    const reg e = exp(mul(x, set1(-2.0f)));
    return fmadd(set1(2.0f), recip(add(set1(1.0f), e)), set1(-1.0f));
  }
  static FASTVAE_SIMD_INLINE reg exp(reg x) {
    using P = ExpPoly;
    x = _mm512_max_ps(_mm512_set1_ps(P::kLo), x);
    x = _mm512_min_ps(_mm512_set1_ps(P::kHi), x);
    const reg n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(P::kLog2e)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    reg r = _mm512_fnmadd_ps(n, _mm512_set1_ps(P::kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(P::kLn2Lo), r);
    reg p = _mm512_set1_ps(P::c0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P::c1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P::c2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P::c3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P::c4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(P::c5));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
  }
};
#endif

}  // namespace cpu
}  // namespace fastvae
