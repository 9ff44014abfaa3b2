"""`python -m bench.train`: bench.train.train."""
from bench import cli
from bench.train.train import main

cli.run(main, prog="bench.train")
