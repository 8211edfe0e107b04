"""``python -m jvae <mode>``: the ``jvae`` command."""

import sys

from jvae.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
