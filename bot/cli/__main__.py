"""`python -m bot.cli`: the same as the `wa-access` command.

The package is imported once, as `bot.cli`, so the CliError its subcommand
modules raise is the one `main` catches.
"""

import sys

from . import main

sys.exit(main())
