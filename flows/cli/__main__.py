"""`python -m flows.cli`: the same command as the `secure-pipeline` console script."""

import sys

from flows.cli import main

sys.exit(main())
