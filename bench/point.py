"""`python -m bench.point`, as commands written before bench/ was regrouped call it: bench.sweep.point."""
import sys

from bench.sweep.point import main

if __name__ == "__main__":
    sys.exit(main())
