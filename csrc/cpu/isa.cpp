// cpu_isa(): the ISA level of the CPU loops, detected once (FASTVAE_CPU_ISA overrides; isa.h).
#include <cstdlib>
#include <cstring>

#include <unistd.h>

#include <c10/util/Exception.h>

#include "isa.h"

namespace fastvae {
namespace cpu {
namespace {

Isa detect() {
#ifdef FASTVAE_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("fma"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Generic;
}

Isa choose() {
  const Isa best = detect();
  const char* env = std::getenv("FASTVAE_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  Isa wanted;
  if (std::strcmp(env, "generic") == 0) {
    wanted = Isa::Generic;
  } else if (std::strcmp(env, "avx2") == 0) {
    wanted = Isa::Avx2;
  } else if (std::strcmp(env, "avx512") == 0) {
    wanted = Isa::Avx512;
  } else {
    TORCH_CHECK_VALUE(false, "FASTVAE_CPU_ISA must be generic, avx2 or avx512, got '", env, "'");
  }
  TORCH_CHECK_VALUE(static_cast<int>(wanted) <= static_cast<int>(best), "FASTVAE_CPU_ISA=", env,
                    " is not supported by this CPU (best: ", isa_name(best), ")");
  return wanted;
}

}  // namespace

Isa cpu_isa() {
  static const Isa isa = choose();
  return isa;
}

bool cpu_is_intel() {
#ifdef FASTVAE_X86_DISPATCH
  static const bool intel = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
  }();
  return intel;
#else
  return false;
#endif
}

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc: from cpuid on x86; 0 or -1 where unknown
    return reported > 0 ? static_cast<int64_t>(reported) : int64_t(1) << 20;
  }();
  return bytes;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "generic";
  }
}

}  // namespace cpu
}  // namespace fastvae
