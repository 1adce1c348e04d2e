// Blocks of counter-based standard normals (the stream of philox.h), computed
// with the widest vectors the CPU has (generic SSE2, AVX2, AVX-512).
#pragma once

#include <cstdint>

#include "philox.h"

namespace fastvae {
namespace cpu {
namespace philox {

// Normals per call at most: buf holds 4 * nc floats, nc <= kBlockCounters.
constexpr int64_t kBlockCounters = 64;

// buf[4 t + m] = normal m of counter c0 + t (tl.randn4x(seed, c0 + t)[m]) for
// t < nc <= kBlockCounters. The Philox words are identical on every ISA
// level; the float part may differ by an ulp where the compiler contracts to
// FMA (AVX2/AVX-512) and where it cannot (generic).
void normals(Key key, int64_t c0, int64_t nc, float* buf);

}  // namespace philox
}  // namespace cpu
}  // namespace fastvae
