"""`python -m ecbench.bench.cli`: the `ecbench` command."""

from ecbench.bench.cli.main import main

if __name__ == "__main__":
    main()
