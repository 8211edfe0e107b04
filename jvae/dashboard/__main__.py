import sys

from jvae.dashboard.replay import main

sys.exit(main())
