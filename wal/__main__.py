"""`python -m wal verify DIR` / `python -m wal dump DIR`."""

import sys

from .cli import main

sys.exit(main())
