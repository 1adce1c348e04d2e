"""Ahead-of-time compilation of Triton launches for a GPU that is not there.

Triton's wheel ships ``ptxas`` and ``cuobjdump``, so a kernel compiles to a
cubin for sm_80 or sm_90 on a CPU-only machine, and the cubin tells what the
kernel costs on that GPU: registers per thread, spilled bytes, shared memory.

A launch to compile is a :class:`fastvae.kernels._launch.Launch`, recorded by
calling a launcher on meta tensors inside ``_launch.recording()``. It is
specialized exactly as ``JITFunction.run`` would specialize it on a GPU (the
same binder: 16-byte alignment of pointers, divisibility of integers,
integers equal to 1 made constant), then compiled with ``triton.compile``.
A meta tensor's ``data_ptr()`` is its byte offset, so a slice's alignment is
the one a (256-byte aligned) CUDA allocation would give.

Needs the real Triton compiler: under ``TRITON_INTERPRET=1`` ``@triton.jit``
makes interpreter functions, which cannot be compiled; run this in a process
started without that variable.
"""

import importlib
import os
import re
import subprocess
import tempfile
from typing import NamedTuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

#: GPU architectures compiled for: A100 (sm_80) and H100 (sm_90).
CAPABILITIES = (80, 90)
#: Shared memory one block may use (the opt-in maximum), bytes: A100 163 KiB, H100 227 KiB.
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
WARP_SIZE = 32
_RES_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def target_name(capability: int) -> str:
    return f"sm_{capability}"


def tool_path(name: str) -> str:
    """A CUDA tool shipped in Triton's wheel (``ptxas``, ``cuobjdump``)."""
    import triton.backends.nvidia as nvidia

    path = os.path.join(os.path.dirname(nvidia.__file__), "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} is not in this Triton install ({path})")
    return path


def ptxas_version() -> str:
    out = subprocess.run([tool_path("ptxas"), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


class Job(NamedTuple):
    """One specialized kernel to compile for one GPU; plain data, so it can go to another process."""

    module: str  # e.g. "fastvae.kernels.lstm"
    kernel: str  # the kernel's name in that module
    capability: int
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict

    def key(self) -> tuple:
        """Equal for launches that compile to the same binary."""
        return (self.module, self.kernel, self.capability, repr(self.signature), repr(sorted(self.constexprs.items())),
                repr(sorted(self.attrs.items())), repr(sorted(self.options.items())))


def _require_compiler(kernel) -> None:
    if not isinstance(kernel, JITFunction):
        raise RuntimeError(
            f"{getattr(kernel, '__name__', kernel)!r} is not a compilable triton.jit function "
            f"({type(kernel).__name__}): ahead-of-time compilation needs TRITON_INTERPRET unset "
            "when the kernels are imported"
        )


def specialize(launch, capability: int) -> Job:
    """The :class:`Job` that ``launch`` would compile to on a GPU of ``capability`` (as JITFunction.run does)."""
    kernel = launch.kernel
    _require_compiler(kernel)
    backend = make_backend(GPUTarget("cuda", capability, WARP_SIZE))
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = bool(kwargs.get("debug", kernel.debug)) or triton.knobs.runtime.debug
    kwargs["instrumentation_mode"] = triton.knobs.compilation.instrumentation_mode
    kwargs["fpsan_homomorphic_casts"] = triton.knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    return Job(kernel.fn.__module__, kernel.fn.__name__, capability, signature, constexprs, attrs, options.__dict__)


def compile_job(job: Job):
    """``triton.compile`` of ``job``; returns the CompiledKernel (raises what the compiler raises)."""
    kernel = getattr(importlib.import_module(job.module), job.kernel)
    _require_compiler(kernel)
    source = ASTSource(kernel, job.signature, job.constexprs, job.attrs)
    return triton.compile(source, target=GPUTarget("cuda", job.capability, WARP_SIZE), options=dict(job.options))


def resource_usage(compiled) -> dict:
    """Registers, spills and shared memory of a compiled kernel, read from its cubin with ``cuobjdump -res-usage``.

    ``stack_bytes``/``local_bytes`` > 0 mean register spills; ``shared_bytes``
    is what a launch asks for (Triton's dynamic shared memory plus any static).
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run(
            [tool_path("cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True
        ).stdout
    found = _RES_USAGE.search(out)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{out}")
    registers, stack, static_shared, local = (int(v) for v in found.groups())
    meta = compiled.metadata
    return {
        "registers": registers,
        "stack_bytes": stack,
        "local_bytes": local,
        "shared_bytes": meta.shared + static_shared,
        "num_warps": meta.num_warps,
        "num_stages": meta.num_stages,
    }


def compile_and_measure(job: Job) -> dict:
    """Compile ``job`` and return its :func:`resource_usage` (the unit of work of a process pool)."""
    return resource_usage(compile_job(job))
