"""`python -m xbarc` runs the command line."""

import sys

from xbarc.cli import main

sys.exit(main())
