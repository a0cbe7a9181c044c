"""`python -m meshshift.cli` is the `meshshift` command."""

import sys

from meshshift.cli.main import main

sys.exit(main())
