"""`python -m bench.report`: bench.report.report."""
from bench import cli
from bench.report.report import main

cli.run(main, prog="bench.report")
