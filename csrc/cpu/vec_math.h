// Transcendentals written so the compiler vectorizes the loops that call them.
//
// glibc's scalar expf/tanhf are opaque calls that stop vectorization; a
// scalar-libm LSTM cell loop was measured 8x slower than oneDNN here. The
// float versions below are branch-free (range reduction + Cephes-style
// polynomial, ~1e-7 relative error), need no -ffast-math, and keep NaN
// propagation: a NaN input fails every comparison and flows through the
// arithmetic. Doubles (gradcheck, float64 users) use libm for full accuracy.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// ISA levels of the hot CPU loops. Each loop is compiled once per level
// (FASTVAE_ISA_VARIANTS below) and the best one the CPU supports is picked at
// run time, so the extension stays portable without -march=native and still
// uses AVX-512 where it exists. (GCC's target_clones was tried: its resolver
// picked the generic copy on AVX-512 AMD CPUs.) FASTVAE_CPU_ISA=generic|avx2|
// avx512 forces a level (tests use it to check every variant).
#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTVAE_NO_ISA_DISPATCH)
#define FASTVAE_X86_DISPATCH 1
#define FASTVAE_ISA_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi2,f16c")))
#define FASTVAE_ISA_AVX2 __attribute__((target("avx2,fma,bmi2,f16c")))
#endif

#define FASTVAE_INLINE inline __attribute__((always_inline))

namespace fastvae {
namespace cpu {

enum class Isa { Generic, Avx2, Avx512 };

// The ISA level used by the CPU loops (detected once, FASTVAE_CPU_ISA overrides).
Isa cpu_isa();
const char* isa_name(Isa isa);

FASTVAE_INLINE float exp_approx(float x) {
  // Clamp to the range where 2^n stays a normal float; NaN passes through.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float t = x * 1.44269504088896341f;
  // Round to nearest with the 1.5*2^23 trick (no libm call, vectorizes).
  const float n = (t + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

FASTVAE_INLINE float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// tanh(x) = 2 sigmoid(2x) - 1: one exponential, saturates to +-1 exactly.
FASTVAE_INLINE float tanh(float x) { return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f; }

FASTVAE_INLINE double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
FASTVAE_INLINE double tanh(double x) { return std::tanh(x); }

}  // namespace cpu
}  // namespace fastvae

// FASTVAE_ISA_VARIANTS(NAME, BODY, (params...), (args...)) defines the
// function template NAME<scalar_t>(params...) that runs BODY<scalar_t>(args...)
// compiled for the best ISA level of this CPU. BODY must be FASTVAE_INLINE.
#ifdef FASTVAE_X86_DISPATCH
#define FASTVAE_ISA_VARIANTS(NAME, BODY, PARAMS, ARGS)                       \
  template <typename scalar_t>                                               \
  FASTVAE_ISA_AVX512 void NAME##_avx512 PARAMS { BODY<scalar_t> ARGS; }      \
  template <typename scalar_t>                                               \
  FASTVAE_ISA_AVX2 void NAME##_avx2 PARAMS { BODY<scalar_t> ARGS; }          \
  template <typename scalar_t>                                               \
  void NAME PARAMS {                                                         \
    switch (::fastvae::cpu::cpu_isa()) {                                     \
      case ::fastvae::cpu::Isa::Avx512:                                      \
        NAME##_avx512<scalar_t> ARGS;                                        \
        return;                                                              \
      case ::fastvae::cpu::Isa::Avx2:                                        \
        NAME##_avx2<scalar_t> ARGS;                                          \
        return;                                                              \
      default:                                                               \
        BODY<scalar_t> ARGS;                                                 \
    }                                                                        \
  }
#else
#define FASTVAE_ISA_VARIANTS(NAME, BODY, PARAMS, ARGS) \
  template <typename scalar_t>                         \
  void NAME PARAMS { BODY<scalar_t> ARGS; }
#endif
