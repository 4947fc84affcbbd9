import sys

from carlightd.cli import main

sys.exit(main())
