import sys

from dcf.cli import main

sys.exit(main())
