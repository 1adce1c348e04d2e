#!/usr/bin/env bash
# One-call GPU check of fastvae: build, CUDA tests and GPU benchmarks, results in OUT.
#
#   bash benchmarks/gpu/run.sh OUT [--budget-s 480] [--skip-build]
#
# Runs from anywhere; needs a CUDA GPU with torch, triton and a C++ compiler
# installed (no network). Writes OUT/check.log, summary.json, tests.xml and
# bench.json; exit status 0 when all passed, 1 when a step failed or ran out of
# time, 2 without a CUDA device or with wrong arguments. PYTHON picks the
# interpreter (default python3). See benchmarks/gpu/check.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ "$#" -lt 1 ]; then
  echo "usage: bash benchmarks/gpu/run.sh OUT [--budget-s SECONDS] [--skip-build]" >&2
  exit 2
fi
cd "$ROOT"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu/check.py "$@"
