"""``python -m studies.model_diff``: see :mod:`studies.model_diff.cli`."""

import sys

from studies.model_diff.cli import main

sys.exit(main())
