"""`python -m compress`: the same as the `compress` command."""

from compress.cli.main import main

if __name__ == "__main__":
    main()
