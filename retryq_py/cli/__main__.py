"""`python -m retryq_py.cli`, the same as the `retryq` console script."""

from retryq_py.cli.main import main

if __name__ == "__main__":
    main()
