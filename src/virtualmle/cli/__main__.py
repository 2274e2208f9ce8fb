import sys

from virtualmle.cli import main

sys.exit(main())
