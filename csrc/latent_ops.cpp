// Operator schemas of the latent-space ops (reparameterization, Gaussian KL,
// the SLCVAE latent loss). Kernels: csrc/cpu/latent_cpu.cpp (CPU) and
// kernels/latent.py (Triton, registered from fastvae/ops/ as *_triton ops).
//
// Shapes: B = batch, Z = latent size. Every [B, Z] tensor of one call has the
// same shape and floating dtype; the CPU kernels take float32/float64, any
// strides. Non-finite values in the float inputs raise ValueError naming the
// argument; so do negative free_bits and mismatched shapes.
#include <torch/library.h>

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
  // Per-example KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) summed over Z.
  //   mu_q, logvar_q [B,Z]; mu_p, logvar_p [B,Z] or both None (N(0, I) prior).
  //   free_bits >= 0: a latent dim j whose batch-mean KL is below free_bits
  //   contributes the constant free_bits to every example (0 disables this).
  // Returns kl [B] and active bool [Z] (false where dim j was clamped; [0]
  // when free_bits == 0), which the backward needs.
  m.def(
      "gaussian_kl(Tensor mu_q, Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, float free_bits) "
      "-> (Tensor, Tensor)");
  // Gradients of gaussian_kl: grad_kl [B] -> d mu_q, d logvar_q [B,Z] and
  // d mu_p, d logvar_p [B,Z] ([0] when the prior is N(0, I)).
  m.def(
      "gaussian_kl_bwd(Tensor grad_kl, Tensor mu_q, Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, "
      "Tensor active) -> (Tensor, Tensor, Tensor, Tensor)");
  // The latent part of the SLCVAE loss in one pass:
  //   kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits)   [B]
  //   label = sum_j (z - z_label)^2                                  [B]
  //   total = kl_weight * kl + label_weight * label                  [B]
  // z, z_label [B,Z]. Returns (total, kl, label, active [Z] or [0]).
  m.def(
      "kl_label_loss(Tensor mu_q, Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, Tensor z, "
      "Tensor z_label, float kl_weight, float label_weight, float free_bits) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of kl_label_loss from grad_total, grad_kl, grad_label [B] (any
  // stride; None counts as zero):
  // d mu_q, d logvar_q, d mu_p, d logvar_p, d z [B,Z] (prior grads [0] when
  // the prior is N(0, I)). z_label gets none: it is a fixed target.
  m.def(
      "kl_label_loss_bwd(Tensor? grad_total, Tensor? grad_kl, Tensor? grad_label, Tensor mu_q, "
      "Tensor logvar_q, Tensor? mu_p, Tensor? logvar_p, Tensor z, Tensor z_label, float kl_weight, "
      "float label_weight, Tensor active) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
