"""`python -m attncost COMMAND`: the same as the `attncost` command."""

from .cli.main import app

if __name__ == "__main__":
    app()
