"""``python -m fastvae ...`` (also ``torchrun --nproc_per_node N -m fastvae train ...``)."""

import sys

from fastvae.cli import main

if __name__ == "__main__":  # not when a spawned process (fastvae demo's second model) imports this module
    sys.exit(main())
