"""The `attncost` command line: a thin typer layer that parses, calls and prints."""
