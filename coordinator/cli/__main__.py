"""`python -m coordinator.cli` = `dblocks`."""

from coordinator.cli import main

if __name__ == "__main__":  # not again in a process spawned from this one (the API's model workers)
    main()
