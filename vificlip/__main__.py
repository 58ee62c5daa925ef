"""`python -m vificlip fit|validate|test|predict ...`: the shared Lightning CLI."""

from common.cli import main

if __name__ == "__main__":
    main()
