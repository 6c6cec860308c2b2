"""``python -m embedkit``: the same command line as the ``embedkit`` script."""

import sys

from embedkit.cli.main import main

sys.exit(main())
