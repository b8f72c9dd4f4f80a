"""Write docs/findings.md from the experiment modules' declared claims and criteria (``make docs``).

Usage: ``python scripts/findings.py [PATH]`` (default ``docs/findings.md``, relative to the current
directory; run it from the repository root). The text comes from
:func:`losslab.experiments.findings_markdown`; tests/test_docs.py checks the committed file equals it.
"""
from __future__ import annotations

import sys

from losslab.experiments._findings import main

if __name__ == "__main__":
    sys.exit(main())
