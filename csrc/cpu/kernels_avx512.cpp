// The AVX-512 (16 float lanes) tile kernels.
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
#pragma GCC target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,bmi2,f16c")
#define FASTVAE_SIMD_AVX512
#include "simd.h"

namespace fastvae {
namespace cpu {
namespace avx512 {
#define FASTVAE_TILE_VEC VecAvx512
#include "tile_kernels.h"
#undef FASTVAE_TILE_VEC
}  // namespace avx512
}  // namespace cpu
}  // namespace fastvae

#pragma GCC pop_options

namespace fastvae {
namespace cpu {

const KernelSet<float>* kernels_avx512() {
  static const KernelSet<float> set = FASTVAE_KERNEL_SET(avx512, "avx512");
  return &set;
}

}  // namespace cpu
}  // namespace fastvae

#else  // no x86 dispatch: the level is not compiled in

namespace fastvae {
namespace cpu {

const KernelSet<float>* kernels_avx512() { return nullptr; }

}  // namespace cpu
}  // namespace fastvae

#endif
