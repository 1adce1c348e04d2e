// CPU kernel of linear_argmax (schema: csrc/linear_argmax_ops.cpp), the greedy
// decoding head: argmax_v (hidden @ weight^T + bias) without the logits.
//
// Generation at the paper's size projects 640 rows onto 10,000 words per
// step; materialising that [R, V] matrix and reading it back for the argmax
// costs as much as the product. Here rows are taken in chunks of token panels
// and the vocabulary in blocks; each score lives only in a register tile of
// the head_argmax kernel (csrc/cpu/tile_kernels.h), which keeps the running
// best per row.
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
#include "kernels.h"

namespace fastvae {
namespace cpu {
namespace {

// Blocking, in bytes of the operands: a chunk of hidden rows (its transposed
// panels, ~kChunkBytes) and a block of words (their weights, ~kBlockBytes) stay
// in L2 together, so the weight matrix, far larger than L2, is read from
// memory once per chunk: once per call at the decoding sizes (640 rows of
// H <= 256). The chunk is smaller when that leaves a thread idle.
constexpr int64_t kChunkBytes = 640 * 1024;
constexpr int64_t kBlockBytes = 128 * 1024;

int64_t row_chunk(int64_t R, int64_t H, int64_t elem) {
  int64_t rows = std::max<int64_t>(kPanelWidth, kChunkBytes / (H * elem) / kPanelWidth * kPanelWidth);
  const int64_t threads = at::get_num_threads();
  if (threads > 1) {  // at least one chunk per thread
    const int64_t per_thread = (R + threads - 1) / threads;
    rows = std::min(rows, std::max<int64_t>(kPanelWidth, (per_thread + kPanelWidth - 1) / kPanelWidth * kPanelWidth));
  }
  return rows;
}

int64_t vocab_block(int64_t H, int64_t elem) {
  return std::max<int64_t>(64, kBlockBytes / (H * elem) / 64 * 64);
}

// Rows [r0, r0 + rows) of hidden: their transposed panels, then a running
// (max, argmax) over the vocabulary in blocks. Indices are carried as
// scalar_t (exact: the caller keeps V below 2^24 for float).
template <typename scalar_t>
void argmax_rows(const KernelSet<scalar_t>& ks, int64_t r0, int64_t rows, int64_t H, int64_t V,
                 const scalar_t* hidden, const scalar_t* weight, const scalar_t* bias, int64_t* out_index,
                 scalar_t* out_value) {
  Panels<scalar_t> hT;
  pack_panels(true, H, rows, hidden + r0 * H, H, hT);  // hidden^T [H, rows]
  const int64_t width = hT.count() * kPanelWidth;
  std::vector<scalar_t> best(width, -std::numeric_limits<scalar_t>::infinity()), best_index(width, 0);
  const int64_t block = vocab_block(H, sizeof(scalar_t));
  for (int64_t v0 = 0; v0 < V; v0 += block) {
    const int64_t n = std::min(block, V - v0);
    ks.head_argmax(n, H, weight + v0 * H, H, bias != nullptr ? bias + v0 : nullptr, hT.data.data(), hT.count(),
                   static_cast<scalar_t>(v0), best.data(), best_index.data());
  }
  for (int64_t r = 0; r < rows; ++r) {
    out_index[r0 + r] = static_cast<int64_t>(best_index[r]);
    out_value[r0 + r] = best[r];
  }
}

template <typename scalar_t>
void linear_argmax_impl(const at::Tensor& hidden, const at::Tensor& weight, const scalar_t* bias,
                        at::Tensor& index, at::Tensor& value) {
  const int64_t R = hidden.size(0), H = hidden.size(1), V = weight.size(0);
  const KernelSet<scalar_t>& ks = kernels<scalar_t>();
  const int64_t chunk_rows = row_chunk(R, H, sizeof(scalar_t));
  const int64_t chunks = (R + chunk_rows - 1) / chunk_rows;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t r0 = chunk * chunk_rows;
      argmax_rows<scalar_t>(ks, r0, std::min(chunk_rows, R - r0), H, V, hidden.data_ptr<scalar_t>(),
                            weight.data_ptr<scalar_t>(), bias, index.data_ptr<int64_t>(),
                            value.data_ptr<scalar_t>());
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
  // Word indices ride in the kernels' float registers: exact below 2^24.
  const bool exact_index = hidden.scalar_type() == at::kDouble || V < (int64_t(1) << 24);
  if (R == 0 || H == 0 || !exact_index) {
    auto scores = bias.has_value() ? at::addmm(*bias, hidden, weight.t()) : at::mm(hidden, weight.t());
    auto [val, idx] = scores.max(1);
    return {idx, val};
  }
  auto index = at::empty({R}, hidden.options().dtype(at::kLong));
  auto value = at::empty({R}, hidden.options());
  const auto b = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "fastvae_linear_argmax", [&] {
    linear_argmax_impl<scalar_t>(hidden.contiguous(), weight.contiguous(),
                                 b.defined() ? b.data_ptr<scalar_t>() : nullptr, index, value);
  });
  return {index, value};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, CPU, m) { m.impl("linear_argmax", &linear_argmax_cpu); }

}  // namespace cpu
}  // namespace fastvae
