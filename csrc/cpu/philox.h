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
// polynomials (so the sampling loops vectorize); they differ from the
// libdevice/numpy functions Triton uses by an ulp or two, so CPU and Triton
// eps agree to ~1e-6 absolute rather than bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "vec_math.h"

namespace fastvae {
namespace cpu {
namespace philox {

constexpr uint32_t kKeyA = 0x9E3779B9u;
constexpr uint32_t kKeyB = 0xBB67AE85u;
constexpr uint32_t kRoundA = 0xD2511F53u;
constexpr uint32_t kRoundB = 0xCD9E8D57u;

FASTVAE_INLINE uint32_t mulhi(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Ten Philox rounds on counter (c0, c1, 0, 0); returns the four words.
FASTVAE_INLINE void philox4x32_10(uint32_t c0, uint32_t c1, uint32_t k0, uint32_t k1, uint32_t& x0,
                                  uint32_t& x1, uint32_t& x2, uint32_t& x3) {
  uint32_t c2 = 0, c3 = 0;
  // Fully unrolled, or the loop around a call does not vectorize.
#pragma GCC unroll 10
  for (int r = 0; r < 10; ++r) {
    const uint32_t a0 = c0, a2 = c2;
    c0 = mulhi(kRoundB, a2) ^ c1 ^ k0;
    c2 = mulhi(kRoundA, a0) ^ c3 ^ k1;
    c1 = kRoundB * a2;
    c3 = kRoundA * a0;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  x0 = c0;
  x1 = c1;
  x2 = c2;
  x3 = c3;
}

// Triton's uint_to_uniform_float for 32-bit words: a float in [0, 1).
FASTVAE_INLINE float uint_to_uniform(uint32_t x) {
  int32_t v = static_cast<int32_t>(x);
  v = v < 0 ? ~v : v;
  return static_cast<float>(v) * 4.6566127342e-10f;
}

// Natural log for positive normal floats (Cephes logf, ~1 ulp).
FASTVAE_INLINE float log_pos(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  int32_t e = ((bits >> 23) & 0xff) - 126;  // x = m * 2^e, m in [0.5, 1)
  bits = (bits & 0x807fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  const float fe = static_cast<float>(e);
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return (m + y) + 0.693359375f * fe;
}

// sin(x) and cos(x) for |x| up to a few thousand (quadrant reduction, Cephes
// polynomials on [-pi/4, pi/4]).
FASTVAE_INLINE void sincos_reduced(float x, float& sin_x, float& cos_x) {
  // j = nearest integer to x / (pi/2); r = x - j pi/2 in three exact parts.
  const float j = (x * 0.636619772367581343f + 12582912.0f) - 12582912.0f;
  float r = x - j * 1.5703125f;
  r = r - j * 4.837512969970703125e-4f;
  r = r - j * 7.54978995489188216e-8f;
  const float z = r * r;
  const float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z -
                  0.5f * z + 1.0f;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  const int32_t q = static_cast<int32_t>(j) & 3;
  // x = r + q pi/2: cos x = (cos r, -sin r, -cos r, sin r)[q], sin x = (sin r, cos r, -sin r, -cos r)[q].
  const float cv = (q & 1) ? s : c;
  const float sv = (q & 1) ? c : s;
  cos_x = ((q + 1) & 2) ? -cv : cv;
  sin_x = (q & 2) ? -sv : sv;
}

// max(u, lo) for non-negative floats, on the bit patterns (their order is the
// float order): GCC does not vectorize the float compare feeding log_pos.
FASTVAE_INLINE float max_nonneg(float u, float lo) {
  int32_t bu, bl;
  std::memcpy(&bu, &u, sizeof(bu));
  std::memcpy(&bl, &lo, sizeof(bl));
  bu = bu < bl ? bl : bu;
  std::memcpy(&u, &bu, sizeof(u));
  return u;
}

// Four standard normals from counter `counter` of the stream keyed by
// (k0, k1): Triton's tl.randn4x(seed, counter). Box-Muller on the word pairs
// (x0, x1) and (x2, x3): n0, n1 = r cos t, r sin t with r = sqrt(-2 log u0),
// t = 2 pi u1.
FASTVAE_INLINE void normal4(uint32_t k0, uint32_t k1, uint64_t counter, float& n0, float& n1, float& n2,
                            float& n3) {
  uint32_t x0, x1, x2, x3;
  philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), k0, k1, x0, x1, x2, x3);
  const float r01 = __builtin_sqrtf(-2.0f * log_pos(max_nonneg(uint_to_uniform(x0), 1.0e-7f)));
  const float r23 = __builtin_sqrtf(-2.0f * log_pos(max_nonneg(uint_to_uniform(x2), 1.0e-7f)));
  float s01, c01, s23, c23;
  sincos_reduced(6.283185307179586f * uint_to_uniform(x1), s01, c01);
  sincos_reduced(6.283185307179586f * uint_to_uniform(x3), s23, c23);
  n0 = r01 * c01;
  n1 = r01 * s01;
  n2 = r23 * c23;
  n3 = r23 * s23;
}

struct Key {
  uint32_t k0, k1;
  explicit Key(int64_t seed)
      : k0(static_cast<uint32_t>(static_cast<uint64_t>(seed))),
        k1(static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32)) {}
};

}  // namespace philox
}  // namespace cpu
}  // namespace fastvae
