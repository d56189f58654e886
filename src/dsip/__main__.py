"""``python -m dsip`` runs the command line."""

from __future__ import annotations

import sys

from dsip.cli import main

sys.exit(main())
