"""``python -m nspec``: the command line (see ``nspec.cli``)."""

import sys

from nspec.cli import main

if __name__ == "__main__":
    sys.exit(main())
