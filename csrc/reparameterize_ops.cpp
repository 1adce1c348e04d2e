// Operator schemas of the reparameterization trick (fastvae.ops.reparameterize)
// and its autograd.
//
// CPU kernels: csrc/cpu/reparameterize_cpu.cpp; Triton: kernels/reparameterize.py
// (registered from fastvae/ops/reparameterize.py as *_triton ops, with the
// fake kernels). Shapes: B = batch, Z = latent size. Every [B, Z] tensor of
// one call has the same shape and floating dtype; the CPU kernels take
// float32/float64, any strides. Non-finite values in the float inputs raise
// ValueError naming the argument.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "autograd_common.h"

TORCH_LIBRARY_FRAGMENT(fastvae, m) {
  // z = mu + eps * exp(0.5 * logvar).
  //   mu, logvar [B,Z]; eps [B,Z] or None; seed int64 scalar tensor or None
  //   (exactly one of eps / seed). Without eps, eps[b,j] is the standard-normal
  //   draw number b*Z+j of the Philox4x32-10 stream keyed by seed (the recipe
  //   of Triton's tl.randn, see csrc/cpu/philox.h), computed in float32.
  // Returns z [B,Z].
  m.def("reparameterize(Tensor mu, Tensor logvar, Tensor? eps, Tensor? seed) -> Tensor");
  // d logvar = 0.5 * grad_z * eps * exp(0.5 * logvar), eps regenerated from
  // seed when eps is None (d mu is grad_z itself). grad_z, logvar [B,Z] ->
  // grad_logvar [B,Z].
  m.def("reparameterize_bwd(Tensor grad_z, Tensor logvar, Tensor? eps, Tensor? seed) -> Tensor");
}

// Autograd at the Autograd key: one C++ graph node per call whose backward
// calls reparameterize_bwd (why C++: csrc/autograd_common.h -- the op is
// tiny, B=64, Z=8 in the SLCVAE, so a step is dominated by per-call overhead).
namespace fastvae {
namespace {

using ReparamSig = at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&);

struct ReparameterizeFn : public torch::autograd::Function<ReparameterizeFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                            const OptTensor& eps, const OptTensor& seed) {
    static const auto op = op_handle<ReparamSig>("fastvae::reparameterize");
    at::Tensor z;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      z = op.call(mu, logvar, eps, seed);
    }
    // Only logvar and the seed (or the given eps): the backward regenerates eps.
    ctx->save_for_backward({logvar, eps.value_or(at::Tensor()), seed.value_or(at::Tensor())});
    return z;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<ReparamSig>("fastvae::reparameterize_bwd");
    first_order_only("reparameterize");
    at::AutoDispatchBelowADInplaceOrView guard;  // straight to the kernels (no autograd fallback, no boxing)
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& logvar = saved[0];
    const at::Tensor& eps = saved[1];
    const at::Tensor& grad_z = grads[0];
    at::Tensor grad_logvar, grad_eps;
    if (ctx->needs_input_grad(1)) grad_logvar = bwd.call(grad_z, logvar, maybe(eps), maybe(saved[2]));
    if (ctx->needs_input_grad(2)) grad_eps = at::mul(grad_z, at::exp(at::mul(logvar, 0.5)));
    // dz/dmu is the identity.
    return {grad_z, grad_logvar, grad_eps, at::Tensor()};
  }
};

at::Tensor reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, const OptTensor& eps,
                                   const OptTensor& seed) {
  return ReparameterizeFn::apply(mu, logvar, eps, seed);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastvae, Autograd, m) { m.impl("reparameterize", &reparameterize_autograd); }

}  // namespace fastvae
