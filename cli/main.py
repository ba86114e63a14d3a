"""Entry point: `attncost COMMAND` (``attncost.cli.main:app``). Each command's module is imported
when the command runs (``app.COMMANDS``), so `attncost predict` loads only what predicting needs,
and never torch."""

from .app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
