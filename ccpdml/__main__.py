"""`python -m ccpdml ...`: see `ccpdml.cli`."""

from ccpdml.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
