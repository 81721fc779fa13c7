"""``python -m homemonitor_bench``: what ``make bench`` runs."""

import sys

from homemonitor_bench.cli import main

sys.exit(main())
