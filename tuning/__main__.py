"""``python -m tuning`` runs the ``tuning`` command."""

import sys

try:  # Ctrl-C while Python loads the command: no traceback
    from tuning.cli import main
except KeyboardInterrupt:
    sys.stderr.write("Interrupted before anything started; nothing was written.\n")
    sys.exit(130)

sys.exit(main())
