"""``python -m ift.cli ...`` runs the ``ift`` command (DDP launchers re-run it this way)."""

import sys

from ift.cli import main

sys.exit(main())
