"""`python -m bench.rank`, as commands written before bench/ was regrouped call it: bench.train.rank."""
from bench import cli
from bench.train.rank import main

if __name__ == "__main__":
    cli.run(main, prog="bench.rank")
