"""``python -m fastvae ...`` (also ``torchrun --nproc_per_node N -m fastvae train ...``)."""

import sys

from fastvae.cli import main

sys.exit(main())
