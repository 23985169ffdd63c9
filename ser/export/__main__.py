import sys

from ser.export.cli import main

sys.exit(main())
