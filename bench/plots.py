"""`python -m bench.plots`, as commands written before bench/ was regrouped call it: bench.report.plots."""
from bench import cli
from bench.report.plots import main

if __name__ == "__main__":
    cli.run(main, prog="bench.plots")
