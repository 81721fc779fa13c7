"""``python -m homemonitor_eval``: what ``make evaluate`` runs."""

import sys

from homemonitor_eval.cli import main

sys.exit(main())
