"""``python -m selfsynth`` runs the command-line tool."""

import sys

from selfsynth.cli import main

sys.exit(main())
