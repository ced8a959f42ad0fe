"""``python -m hpcprep.train DATASET ...`` (the same as ``hpcprep train``)."""

import sys

from .cli import main

sys.exit(main())
