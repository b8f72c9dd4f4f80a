"""``python -m losslab.distributed`` (under ``torchrun``): see :mod:`losslab.distributed._cli`."""
import sys

from ._cli import main

sys.exit(main())
