// Greedy decoding head: argmax_v (hidden @ weight^T + bias) without the logits.
//
// Generation at the paper's size projects 640 rows onto 10,000 words per
// step; materialising that [R, V] matrix and reading it back for the argmax
// costs as much as the product. Here rows are taken in chunks and the
// vocabulary in blocks whose scores live only in a small per-thread tile.
//   hidden [R, H], weight [V, H], bias [V] (optional) -> index [R] int64,
//   value [R] (the winning score). Ties go to the lowest index, like argmax;
//   rows whose scores are NaN are not guaranteed to pick the NaN.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../checks.h"
#include "blas.h"
#include "vec_math.h"

namespace fastvae {
namespace cpu {
namespace {

constexpr int64_t kRowChunk = 48;    // rows per task (a multiple of the GEMM's 12-row block)
constexpr int64_t kVocabBlock = 256;  // columns per tile (a multiple of the 32-column panels)
// Tile row stride: padded so the rows of a tile do not share L1 sets.
constexpr int64_t kTileStride = kVocabBlock + 16;

// Running argmax of one tile row into (best, best_index): adds the bias in
// place and takes the row maximum in one vectorized pass; the index is only
// searched for when the block beats the running best.
FASTVAE_ISA_AVX512 void update_best(float* scores, const float* bias, int64_t v0, int64_t n, float& best,
                                    int64_t& best_index) {
  float m = -std::numeric_limits<float>::infinity();
  if (bias != nullptr) {
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; ++j) {
      scores[j] += bias[v0 + j];
      m = std::max(m, scores[j]);
    }
  } else {
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; ++j) m = std::max(m, scores[j]);
  }
  if (!(m > best)) return;
  for (int64_t j = 0; j < n; ++j) {
    if (scores[j] == m) {
      best = m;
      best_index = v0 + j;
      return;
    }
  }
}

void linear_argmax_avx512(const at::Tensor& hidden, const at::Tensor& weight, const float* bias,
                          at::Tensor& index, at::Tensor& value) {
  const int64_t R = hidden.size(0), H = hidden.size(1), V = weight.size(0);
  PackedB packed;
  pack_b(true, H, V, weight.data_ptr<float>(), H, packed);  // weight^T as [H, V] panels
  const float* A = hidden.data_ptr<float>();
  int64_t* out_index = index.data_ptr<int64_t>();
  float* out_value = value.data_ptr<float>();
  const int64_t chunks = (R + kRowChunk - 1) / kRowChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> tile(kRowChunk * kTileStride);
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t r0 = chunk * kRowChunk, rows = std::min(kRowChunk, R - r0);
      std::vector<float> best(rows, -std::numeric_limits<float>::infinity());
      std::vector<int64_t> best_index(rows, 0);
      for (int64_t v0 = 0; v0 < V; v0 += kVocabBlock) {
        const int64_t n = std::min(kVocabBlock, V - v0);
        gemm_panels(rows, A + r0 * H, H, panels(packed, v0, n), 0.0f, tile.data(), kTileStride);
        for (int64_t r = 0; r < rows; ++r)
          update_best(tile.data() + r * kTileStride, bias, v0, n, best[r], best_index[r]);
      }
      for (int64_t r = 0; r < rows; ++r) {
        out_index[r0 + r] = best_index[r];
        out_value[r0 + r] = best[r];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> linear_argmax_cpu(const at::Tensor& hidden, const at::Tensor& weight,
                                                     const c10::optional<at::Tensor>& bias) {
  FASTVAE_CHECK_DIM(hidden, 2);
  FASTVAE_CHECK_DIM(weight, 2);
  FASTVAE_CHECK_FLOAT(hidden);
  const int64_t R = hidden.size(0), H = hidden.size(1), V = weight.size(0);
  FASTVAE_CHECK_SHAPE(weight, V, H);
  TORCH_CHECK_VALUE(V > 0, "fastvae: argument 'weight' must have at least one row (word)");
  TORCH_CHECK_TYPE(weight.scalar_type() == hidden.scalar_type(), "fastvae: weight must have hidden's dtype");
  if (bias.has_value()) {
    FASTVAE_CHECK_SHAPE((*bias), V);
    TORCH_CHECK_TYPE(bias->scalar_type() == hidden.scalar_type(), "fastvae: bias must have hidden's dtype");
  }
  if (hidden.scalar_type() != at::kFloat || cpu_isa() != Isa::Avx512 || R == 0) {
    auto scores = bias.has_value() ? at::addmm(*bias, hidden, weight.t()) : at::mm(hidden, weight.t());
    auto [val, idx] = scores.max(1);
    return {idx, val};
  }
  auto index = at::empty({R}, hidden.options().dtype(at::kLong));
  auto value = at::empty({R}, hidden.options());
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  linear_argmax_avx512(hidden.contiguous(), weight.contiguous(), b.defined() ? b.data_ptr<float>() : nullptr,
                       index, value);
  return {index, value};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // Greedy decoding head: hidden [R,H], weight [V,H], bias [V]? ->
  // (index [R] int64, value [R]) = max over V of hidden @ weight^T + bias.
  // Inference only (no autograd).
  m.def("linear_argmax(Tensor hidden, Tensor weight, Tensor? bias) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastvae, CPU, m) { m.impl("linear_argmax", &linear_argmax_cpu); }

}  // namespace cpu
}  // namespace fastvae
