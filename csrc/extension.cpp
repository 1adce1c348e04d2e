// The Python module fastvae._C and the library fastvae, with what the
// extension reports about the machine it runs on.
//
// Importing fastvae._C runs the static registrations of every translation
// unit: each op's schema in csrc/<op>_ops.cpp (TORCH_LIBRARY_FRAGMENT, with
// its C++ autograd where it has one), its CPU kernel in
// csrc/cpu/<op>_cpu.cpp (TORCH_LIBRARY_IMPL CPU). Fake (meta) kernels, the
// Triton ops and the Python autograd are registered from fastvae/ops/<op>.py.
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/blas.h"
#include "cpu/isa.h"
#include "cpu/kernels.h"

extern "C" {
// The module itself is empty: importing it is what registers the ops.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fastvae {
namespace {

std::string cpu_capability() {
  const char* blas = cpu::blas_first() ? "mkl" : cpu::has_direct_blas() ? "direct" : "aten";
  return std::string("isa=") + cpu::isa_name(cpu::cpu_isa()) + " blas=" + blas;
}

int64_t fma_loop(int64_t n) {
  TORCH_CHECK_VALUE(n >= 0, "fastvae._fma_loop: argument 'n' must be >= 0, got ", n);
  return cpu::kernels<float>().fma_loop(n);
}

}  // namespace
}  // namespace fastvae

TORCH_LIBRARY(fastvae, m) {
  // What the CPU kernels run with: ISA level of the pointwise loops and
  // tile GEMMs, and how the products that pack their right operand per call
  // run: "mkl" (MKL's sgemm, blas.h: blas_first), "direct" (the tile kernels;
  // double and generic-level float ones call the BLAS in libtorch directly) or
  // "aten" (no BLAS symbols: at::mm), e.g. "isa=avx512 blas=mkl".
  m.def("cpu_capability() -> str", &fastvae::cpu_capability);
  // The single-core float FMA peak probe of the ISA level the kernels run:
  // n steps of 12 independent vector FMAs in registers; returns the flops
  // done (time it to get the peak FLOP/s the benchmarks compare with).
  m.def("_fma_loop(int n) -> int", &fastvae::fma_loop);
}
