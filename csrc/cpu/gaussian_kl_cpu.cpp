// CPU kernels of gaussian_kl (schemas: csrc/gaussian_kl_ops.cpp): the KL row
// loops of latent_common.h without the label term.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "latent_common.h"

namespace fastvae {
namespace cpu {
namespace latent {
namespace {

std::tuple<at::Tensor, at::Tensor> gaussian_kl_cpu(const at::Tensor& mu_q, const at::Tensor& logvar_q,
                                                   const c10::optional<at::Tensor>& mu_p,
                                                   const c10::optional<at::Tensor>& logvar_p,
                                                   double free_bits) {
  check_kl_args(mu_q, logvar_q, mu_p, logvar_p);
  check_free_bits(free_bits);
  auto kl = at::empty({mu_q.size(0)}, mu_q.options());
  at::Tensor label;
  auto active = kl_forward(mu_q.contiguous(), logvar_q.contiguous(), opt_contiguous(mu_p),
                           opt_contiguous(logvar_p), at::Tensor(), at::Tensor(), free_bits, kl, label);
  return {kl, active};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gaussian_kl_bwd_cpu(
    const at::Tensor& grad_kl, const at::Tensor& mu_q, const at::Tensor& logvar_q,
    const c10::optional<at::Tensor>& mu_p, const c10::optional<at::Tensor>& logvar_p,
    const at::Tensor& active) {
  check_kl_args(mu_q, logvar_q, mu_p, logvar_p);
  check_rows(grad_kl, "grad_kl", mu_q.size(0), mu_q.scalar_type());
  check_active(active, mu_q.size(1));
  auto g = kl_backward(at::Tensor(), grad_kl, at::Tensor(), 0.0, 0.0, mu_q.contiguous(), logvar_q.contiguous(),
                       opt_contiguous(mu_p), opt_contiguous(logvar_p), at::Tensor(), at::Tensor(),
                       active.contiguous());
  return {g[0], g[1], g[2], g[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, CPU, m) {
  m.impl("gaussian_kl", &gaussian_kl_cpu);
  m.impl("gaussian_kl_bwd", &gaussian_kl_bwd_cpu);
}

}  // namespace latent
}  // namespace cpu
}  // namespace fastvae
