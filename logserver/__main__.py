"""`python -m logserver`, the same as the `logserver` command."""

import sys

from logserver.cli import main

sys.exit(main())
