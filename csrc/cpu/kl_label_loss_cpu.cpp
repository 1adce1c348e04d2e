// CPU kernels of kl_label_loss (schemas: csrc/kl_label_loss_ops.cpp): the KL
// row loops of latent_common.h with the label term sum_j (z - z_label)^2
// folded into the same pass, then total = kl_weight * kl + label_weight * label.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "latent_common.h"

namespace fastvae {
namespace cpu {
namespace latent {
namespace {

// out = a * x + b * y over n entries.
template <typename scalar_t>
void axpby(int64_t n, scalar_t a, const scalar_t* __restrict x, scalar_t b, const scalar_t* __restrict y,
           scalar_t* __restrict out) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = a * x[i] + b * y[i];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_label_loss_cpu(
    const at::Tensor& mu_q, const at::Tensor& logvar_q, const c10::optional<at::Tensor>& mu_p,
    const c10::optional<at::Tensor>& logvar_p, const at::Tensor& z, const at::Tensor& z_label,
    double kl_weight, double label_weight, double free_bits) {
  check_kl_args(mu_q, logvar_q, mu_p, logvar_p);
  check_like(z, "z", mu_q, "mu_q");
  check_like(z_label, "z_label", mu_q, "mu_q");
  check_free_bits(free_bits);
  check_weight(kl_weight, "kl_weight");
  check_weight(label_weight, "label_weight");
  const int64_t B = mu_q.size(0);
  auto kl = at::empty({B}, mu_q.options());
  auto label = at::empty({B}, mu_q.options());
  auto active = kl_forward(mu_q.contiguous(), logvar_q.contiguous(), opt_contiguous(mu_p),
                           opt_contiguous(logvar_p), z.contiguous(), z_label.contiguous(), free_bits, kl,
                           label);
  // total = kl_weight * kl + label_weight * label, in the op's dtype.
  auto total = at::empty({B}, mu_q.options());
  AT_DISPATCH_FLOATING_TYPES(mu_q.scalar_type(), "fastvae_kl_label_total", [&] {
    axpby<scalar_t>(B, static_cast<scalar_t>(kl_weight), kl.const_data_ptr<scalar_t>(),
                    static_cast<scalar_t>(label_weight), label.const_data_ptr<scalar_t>(),
                    total.data_ptr<scalar_t>());
  });
  return {total, kl, label, active};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> kl_label_loss_bwd_cpu(
    const c10::optional<at::Tensor>& grad_total, const c10::optional<at::Tensor>& grad_kl,
    const c10::optional<at::Tensor>& grad_label, const at::Tensor& mu_q, const at::Tensor& logvar_q,
    const c10::optional<at::Tensor>& mu_p, const c10::optional<at::Tensor>& logvar_p, const at::Tensor& z,
    const at::Tensor& z_label, double kl_weight, double label_weight, const at::Tensor& active) {
  check_kl_args(mu_q, logvar_q, mu_p, logvar_p);
  check_like(z, "z", mu_q, "mu_q");
  check_like(z_label, "z_label", mu_q, "mu_q");
  const int64_t B = mu_q.size(0);
  if (grad_total.has_value()) check_rows(*grad_total, "grad_total", B, mu_q.scalar_type());
  if (grad_kl.has_value()) check_rows(*grad_kl, "grad_kl", B, mu_q.scalar_type());
  if (grad_label.has_value()) check_rows(*grad_label, "grad_label", B, mu_q.scalar_type());
  check_active(active, mu_q.size(1));
  auto g = kl_backward(grad_total.value_or(at::Tensor()), grad_kl.value_or(at::Tensor()),
                       grad_label.value_or(at::Tensor()), kl_weight, label_weight, mu_q.contiguous(),
                       logvar_q.contiguous(), opt_contiguous(mu_p), opt_contiguous(logvar_p), z.contiguous(),
                       z_label.contiguous(), active.contiguous());
  return {g[0], g[1], g[2], g[3], g[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, CPU, m) {
  m.impl("kl_label_loss", &kl_label_loss_cpu);
  m.impl("kl_label_loss_bwd", &kl_label_loss_bwd_cpu);
}

}  // namespace latent
}  // namespace cpu
}  // namespace fastvae
