import sys

from meshaios.cli import main

sys.exit(main())
