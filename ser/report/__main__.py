"""``python -m ser.report <multirun dir>``: the sweep report (same as ``ser report``)."""

import sys

from ser.report.sweep import main

sys.exit(main())
