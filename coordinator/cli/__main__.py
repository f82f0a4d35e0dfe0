"""`python -m coordinator.cli` = `dblocks`."""

from coordinator.cli import main

main()
