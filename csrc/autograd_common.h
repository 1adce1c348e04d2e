// Helpers of the ops whose autograd is registered in C++ (at the Autograd
// key: one native graph node per call whose backward calls the *_bwd op).
//
// Why C++ for some ops and not torch.library.register_autograd from Python:
// a Python autograd node cost ~40-200 us per forward+backward on the CPUs we
// measure (register_autograd's generated wrapper the most), a native node
// ~15-20 us -- more than the kernels of the small latent ops, and a tenth of
// a DailyDialog-size LSTM stack. The fake (meta) kernels are still
// registered from Python (fastvae/ops/), and torch.compile / opcheck trace
// through these nodes like any other autograd kernel.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <torch/autograd.h>

#include <optional>

namespace fastvae {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

inline std::optional<at::Tensor> maybe(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::optional<at::Tensor>();
}

// Grad mode is on inside a backward only for create_graph=True: the *_bwd
// kernels have no derivative, so higher-order gradients are refused by name
// (as the Python ops do in fastvae/ops/_checks.py: first_order_only).
inline void first_order_only(const char* op) {
  TORCH_CHECK(!at::GradMode::is_enabled(), "fastvae.ops.", op,
              " is differentiable once: its backward cannot build a graph for higher-order gradients "
              "(create_graph=True). Use fastvae.ops.", op, "_ref (or backend='reference' on a model) for those");
}

}  // namespace fastvae
