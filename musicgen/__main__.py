"""Entry point of `python -m musicgen`."""

import sys

from musicgen.cli import main

sys.exit(main())
