"""The typer application every command registers on, and its --version flag."""

import typer

app = typer.Typer(
    name="attncost",
    help="What an attention layer really costs: predict it, profile it on your GPU, report it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(show: bool) -> None:
    if show:
        from .. import __version__

        print(f"attncost {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """What an attention layer really costs: predict it, profile it on your GPU, report it."""
