import sys

from p2pmed.cli import main

sys.exit(main())
