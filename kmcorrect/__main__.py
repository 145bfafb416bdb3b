"""`python -m kmcorrect VERB ...`, the same as the `kmcorrect` console script."""

import sys

from kmcorrect.cli import main

sys.exit(main())
