// The generic (plain C++) tile kernels: the float set of CPUs without AVX2
// (or FASTVAE_CPU_ISA=generic, or a build without ISA dispatch) and the
// double set of every CPU.
#include "kernels.h"

#include <cmath>
#include <cstring>

#include "simd.h"
#include "isa.h"

namespace fastvae {
namespace cpu {

namespace generic_float {
#define FASTVAE_TILE_VEC VecGeneric<float, 8>
#include "tile_kernels.h"
#undef FASTVAE_TILE_VEC
}  // namespace generic_float

namespace generic_double {
#define FASTVAE_TILE_VEC VecGeneric<double, 4>
#include "tile_kernels.h"
#undef FASTVAE_TILE_VEC
}  // namespace generic_double

const KernelSet<float>& kernels_generic_float() {
  static const KernelSet<float> set = FASTVAE_KERNEL_SET(generic_float, "generic");
  return set;
}

const KernelSet<double>& kernels_generic_double() {
  static const KernelSet<double> set = FASTVAE_KERNEL_SET(generic_double, "generic");
  return set;
}

template <>
const KernelSet<float>& kernels<float>() {
  switch (cpu_isa()) {
    case Isa::Avx512:
      if (kernels_avx512() != nullptr) return *kernels_avx512();
      break;
    case Isa::Avx2:
      if (kernels_avx2() != nullptr) return *kernels_avx2();
      break;
    default:
      break;
  }
  return kernels_generic_float();
}

template <>
const KernelSet<double>& kernels<double>() {
  return kernels_generic_double();
}

}  // namespace cpu
}  // namespace fastvae
