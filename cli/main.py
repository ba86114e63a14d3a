"""Entry point: `attncost COMMAND` (``attncost.cli.main:app``). Importing each command module
registers its commands on the app; none imports torch at import time, so `attncost predict`
never loads it."""

from .app import app  # first: bound before the command modules below are imported

from . import calibrate, crosscheck, fidelity, predict, profile, report  # noqa: E402,F401  (registration)

__all__ = ["app"]

if __name__ == "__main__":
    app()
