// The AVX2 + FMA (8 float lanes) tile kernels.
//
// Every function of this file is compiled for that ISA (the target pragma),
// and only runs where cpu_isa() selects it. The headers are included before
// the pragma so that no inline function they define is compiled for it.
#include "kernels.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "isa.h"
#include "vec_ext.h"

#ifdef FASTVAE_X86_DISPATCH
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi2,f16c")
#define FASTVAE_SIMD_AVX2
#include "simd.h"

namespace fastvae {
namespace cpu {
namespace avx2 {
#define FASTVAE_TILE_VEC VecAvx2
#include "tile_kernels.h"
#undef FASTVAE_TILE_VEC
}  // namespace avx2
}  // namespace cpu
}  // namespace fastvae

#pragma GCC pop_options

namespace fastvae {
namespace cpu {

const KernelSet<float>* kernels_avx2() {
  static const KernelSet<float> set = FASTVAE_KERNEL_SET(avx2, "avx2");
  return &set;
}

}  // namespace cpu
}  // namespace fastvae

#else  // no x86 dispatch: the level is not compiled in

namespace fastvae {
namespace cpu {

const KernelSet<float>* kernels_avx2() { return nullptr; }

}  // namespace cpu
}  // namespace fastvae

#endif
