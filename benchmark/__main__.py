"""``python -m benchmark ARGS`` is ``rtb run ARGS``."""

import sys

from benchmark.commands.run import run_main

if __name__ == "__main__":
    sys.exit(run_main(sys.argv[1:]))
