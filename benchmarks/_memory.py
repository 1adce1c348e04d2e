"""Peak-memory measurement of one call in a fresh Python process.

torch's CPU allocations are invisible to tracemalloc, so we read the peak
resident set size of the process before and after the call. Each candidate
runs in its own process: peak RSS only ever grows, so a second candidate in
the same process would be measured against the first one's peak.

The peak is read from ``VmHWM`` in ``/proc/self/status`` (the high-water mark
of this process image). ``resource.getrusage(...).ru_maxrss`` is the
fallback off Linux; on Linux it is unreliable in a child process: the kernel
carries the parent's high-water mark across fork + exec, so a child of a large
pytest process starts at the parent's RSS and a smaller call never raises it
(measured: 0 kB growth for a 98 MB reference call).
"""

import os
import subprocess
import sys
import textwrap

_HARNESS = """
import resource


def _peak_kb():
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


{setup}
{warmup}
_before = _peak_kb()
{run}
print("PEAK_GROWTH_KB", _peak_kb() - _before)
"""


def peak_rss_growth_kb(setup, warmup, run, timeout=300):
    """Growth of the peak RSS in kB over the code ``run``, in a fresh Python process.

    ``setup`` (imports, inputs) and ``warmup`` (the same call at a tiny shape,
    so that lazy initialisation is not counted) run first, unmeasured. The
    child runs in this directory with this interpreter and environment.
    """
    code = _HARNESS.format(setup=textwrap.dedent(setup), warmup=textwrap.dedent(warmup), run=textwrap.dedent(run))
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=here
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory child failed:\n{proc.stderr[-3000:]}")
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK_GROWTH_KB"):
            return int(line.split()[1])
    raise RuntimeError(f"peak-memory child printed no result:\n{proc.stdout[-3000:]}")
