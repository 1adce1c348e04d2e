// ISA levels of the CPU kernels and how a kernel is compiled for each.
//
// The extension is built without -march=native, so it runs on any x86-64
// CPU, and every hot loop exists once per level -- generic (the x86-64
// baseline), AVX2 + FMA, AVX-512 -- the best one this CPU supports picked at
// run time (cpu_isa(); FASTVAE_CPU_ISA=generic|avx2|avx512 forces a lower
// level, so both x86 classes can be measured on one machine). Two ways to
// compile a loop per level, one per style of vector code:
//
// * intrinsics (csrc/cpu/simd.h, tile_kernels.h): one translation unit per
//   level under `#pragma GCC target` (kernels_{generic,avx2,avx512}.cpp),
//   exported as a KernelSet (kernels.h) -- GCC refuses to inline an intrinsic
//   into a function without the target, so templates cannot be shared;
// * GCC vector extensions (csrc/cpu/vec_ext.h): one template per loop,
//   instantiated per level inside functions with the FASTVAE_ISA_* target
//   attributes (FASTVAE_SIMD_VARIANTS, vec_ext.h).
// (GCC's target_clones was tried: its resolver picked the generic copy on
// AVX-512 AMD CPUs.)
#pragma once

#include <cstdint>

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

// True on an Intel CPU (cpuid's vendor string; false off x86). Used where the
// vendors' hardware prefetchers want different code (lstm_cpu.cpp).
bool cpu_is_intel();

// This core's L2 cache in bytes (the OS's report, read once; 1 MB when it
// reports none): the kernels size the operands they keep in L2 by it.
int64_t l2_cache_bytes();

}  // namespace cpu
}  // namespace fastvae
