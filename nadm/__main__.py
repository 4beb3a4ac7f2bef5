"""`python -m nadm` runs the `nadm` command."""

from nadm.cli import main

main()
