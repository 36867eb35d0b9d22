"""`python -m bench.cli`: the command line."""

import sys

from bench.cli.main import main

sys.exit(main())
