"""``python -m brorl`` (and ``torchrun -m brorl``) runs the command line."""

import sys

from brorl.cli import main

sys.exit(main())
