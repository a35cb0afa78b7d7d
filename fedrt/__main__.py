"""``python -m fedrt`` runs the command line."""

import sys

from fedrt.cli import main

sys.exit(main())
