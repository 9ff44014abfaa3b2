"""`python -m bench.sweep`: bench.sweep.sweep."""
from bench import cli
from bench.sweep.sweep import main

cli.run(main, prog="bench.sweep")
