"""``python -m aioh2s``: the command line of :mod:`aioh2s.cli` (get, ws, serve, demo)."""

import sys

from aioh2s.cli import main

if __name__ == "__main__":
    sys.exit(main())
