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

The binder (``create_function_from_signature``, ``JITFunction._pack_args``)
and ``get_ptxas`` are Triton internals, checked with Triton 3.9: a Triton
whose internals moved makes the compile test fail loudly, not pass silently.

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
from triton.backends.nvidia import compiler as nvidia_compiler
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

#: GPU architectures compiled for: A100 (sm_80) and H100 (sm_90).
CAPABILITIES = (80, 90)
#: Shared memory one block may use (the opt-in maximum), bytes: A100 163 KiB, H100 227 KiB.
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
WARP_SIZE = 32
_RES_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def target_name(capability: int) -> str:
    return f"sm_{capability}"


def cuobjdump_path() -> str:
    """``cuobjdump`` shipped in Triton's wheel."""
    import triton.backends.nvidia as nvidia

    path = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
    if not os.path.exists(path):
        raise FileNotFoundError(f"cuobjdump is not in this Triton install ({path})")
    return path


def ptxas_path(capability: int) -> str:
    """The ``ptxas`` Triton itself uses for this GPU (its wheel ships one for sm_80 and a newer one for sm_90+)."""
    return nvidia_compiler.get_ptxas(capability).path


def ptxas_version(capability: int) -> str:
    out = subprocess.run([ptxas_path(capability), "--version"], capture_output=True, text=True, check=True).stdout
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


def _run_tool(*command) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def _res_usage(cubin_path) -> tuple:
    """(registers, stack, static shared, local) bytes of the kernel in a cubin, from ``cuobjdump -res-usage``."""
    out = _run_tool(cuobjdump_path(), "-res-usage", cubin_path)
    found = _RES_USAGE.search(out)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{out}")
    return tuple(int(v) for v in found.groups())


def _ptxas_spills(compiled, folder) -> tuple:
    """(spill store bytes, spill load bytes, ptxas's cubin) from ``ptxas -v`` on the kernel's PTX with Triton's flags.

    Triton runs ptxas with ``-v`` but drops the log; running it again on the
    same PTX with the same flags gives the log and the same machine code (the
    cubins differ only in the source files' dates in the line table).
    """
    meta = compiled.metadata
    ptx = os.path.join(folder, "kernel.ptx")
    with open(ptx, "w", encoding="utf-8") as f:
        f.write(compiled.asm["ptx"])
    cubin = ptx + ".o"
    capability = meta.target.arch
    arch = nvidia_compiler.sm_arch_from_capability(capability)
    flags = ["-lineinfo", "-v", "--regAllocOptLevel=2"] + ([] if meta.enable_fp_fusion else ["--fmad=false"])
    log = _run_tool(ptxas_path(capability), *flags, f"--gpu-name={arch}", ptx, "-o", cubin)
    found = _SPILLS.search(log)
    if found is None:
        raise RuntimeError(f"ptxas -v printed no spill line:\n{log}")
    return int(found.group(1)), int(found.group(2)), cubin


def resource_usage(compiled) -> dict:
    """Registers, spills and shared memory of a compiled kernel.

    ``cuobjdump -res-usage`` on Triton's cubin gives registers per thread,
    the stack frame, local memory and static shared memory; ``ptxas -v``
    (rerun, see :func:`_ptxas_spills`, and checked to give the same
    resources) gives the bytes of register spill stores and loads
    (``spilled_bytes``, their sum; a stack frame alone is not a spill).
    ``shared_bytes`` is what a launch asks for: Triton's dynamic shared
    memory plus any static.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = _res_usage(path)
        spill_stores, spill_loads, rebuilt = _ptxas_spills(compiled, folder)
        if _res_usage(rebuilt) != usage:
            raise RuntimeError(f"ptxas -v on {compiled.metadata.name}'s PTX used other resources than Triton's "
                               "build: the ptxas flags differ from Triton's")
    registers, stack, static_shared, local = usage
    meta = compiled.metadata
    return {
        "registers": registers,
        "spill_store_bytes": spill_stores,
        "spill_load_bytes": spill_loads,
        "spilled_bytes": spill_stores + spill_loads,
        "stack_bytes": stack,
        "local_bytes": local,
        "shared_bytes": meta.shared + static_shared,
        "num_warps": meta.num_warps,
        "num_stages": meta.num_stages,
    }


def compile_and_measure(job: Job) -> dict:
    """Compile ``job`` and return its :func:`resource_usage` (the unit of work of a process pool)."""
    return resource_usage(compile_job(job))
