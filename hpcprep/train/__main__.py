"""``python -m hpcprep.train DATASET ...`` (the same as ``hpcprep train``)."""

import sys

from ..cli import main

main(["train", *sys.argv[1:]])
