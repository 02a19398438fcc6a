"""``python -m epic_hf`` (and ``accelerate launch -m epic_hf fit ...``): the ``epic-hf`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
