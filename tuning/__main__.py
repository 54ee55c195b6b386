"""``python -m tuning`` runs the ``tuning`` command."""

import sys

from tuning.cli import main

sys.exit(main())
