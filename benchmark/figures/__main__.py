"""`python -m benchmark.figures`: see benchmark/figures/cli.py."""
from benchmark.figures.cli import main

main()
