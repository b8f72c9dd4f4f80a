"""``python -m losslab.distributed`` (under ``torchrun``): see :mod:`losslab.cli.distributed`."""
import sys

from ..cli.distributed import main

sys.exit(main())
