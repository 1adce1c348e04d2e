"""Build of fastvae's compiled extension ``fastvae._C`` (the package metadata is in pyproject.toml).

Install torch first, then build without isolation (an isolated build would
download a multi-GB CUDA torch)::

    pip install torch==2.13.0 setuptools wheel ninja
    pip install -e ".[test]" --no-build-isolation

Environment switches (no probing of the machine, no downloads):

* ``FASTVAE_SKIP_CUDA=1``  never compile CUDA sources.
* ``FASTVAE_FORCE_CUDA=1`` compile CUDA sources even if torch has no CUDA
  (needs nvcc / ``CUDA_HOME``); an error if that is impossible.
* ``TORCH_CUDA_ARCH_LIST`` the GPU architectures, e.g. ``"8.0;9.0"``.
* ``FASTVAE_NO_ISA_DISPATCH=1`` build one generic copy of the CPU loops instead of
  the generic/AVX2/AVX-512 copies picked at run time.
* ``MAX_JOBS``             parallel compile jobs (ninja).
"""

import glob
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def cuda_wanted(cuda_sources):
    """CUDA is compiled when torch was built with it and nvcc is there.

    Never decided by ``torch.cuda.is_available()``: the build machine needs no
    GPU, only the toolkit.
    """
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if env_flag("FASTVAE_SKIP_CUDA") or not cuda_sources:
        return False
    if env_flag("FASTVAE_FORCE_CUDA"):
        if CUDA_HOME is None:
            raise RuntimeError("FASTVAE_FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    rel = lambda pattern: sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    cuda_sources = rel("csrc/cuda/*.cu")
    cxx = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-Wno-unknown-pragmas"]
    if env_flag("FASTVAE_NO_ISA_DISPATCH"):
        cxx.append("-DFASTVAE_NO_ISA_DISPATCH")
    if cuda_wanted(cuda_sources):
        return [
            CUDAExtension(
                "fastvae._C",
                sources + cuda_sources,
                extra_compile_args={"cxx": cxx + ["-DFASTVAE_WITH_CUDA"], "nvcc": ["-O3", "-std=c++17"]},
                extra_link_args=["-fopenmp"],
            )
        ]
    return [CppExtension("fastvae._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])]


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


setup(
    # the metadata (name, version, dependencies, the fastvae command ...) is in pyproject.toml's [project]
    packages=["fastvae", "fastvae.ops", "fastvae.nn", "fastvae.models", "fastvae.data", "fastvae.train", "fastvae.evaluate", "fastvae.cli", "fastvae.kernels"],
    package_dir={"fastvae.kernels": "kernels"},
    package_data={"fastvae": ["py.typed"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": build_ext_class()},
    zip_safe=False,
)
