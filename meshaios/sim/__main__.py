"""``python -m meshaios.sim``: the simulator's command line (``meshaios sim`` once the CLI wires it)."""

from meshaios.sim.cli import main

raise SystemExit(main())
