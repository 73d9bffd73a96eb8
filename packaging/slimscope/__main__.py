"""`python -m slimscope` runs the same entry point as the `slimscope` command."""

import sys

from slimscope.core.cli import main

if __name__ == "__main__":
    sys.exit(main())
