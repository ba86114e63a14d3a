"""The typer application every command registers on, and its --version flag.

Commands load on demand: `attncost predict` imports the predict module alone, not those of
profile, calibrate, report and the others (nor what they import). ``COMMANDS`` names the module of
``attncost.cli`` that registers each command; `attncost --help` loads them all to list them."""

from importlib import import_module

import typer
from typer.main import get_command_from_info, get_command_name

from .layout import PlainHelpGroup

COMMANDS = {"predict": "predict", "variants": "predict", "hardware": "predict", "pick": "pick",
            "profile": "profile", "calibrate": "calibrate", "crosscheck": "crosscheck", "fidelity": "fidelity",
            "report": "report"}  # command -> module, in the order `attncost --help` lists them


class CommandsOnDemand(PlainHelpGroup):
    """A command group that imports a command's module when the command is first asked for (its
    --help as ``layout.PlainHelp`` prints it)."""

    def list_commands(self, ctx) -> list:
        return list(COMMANDS) + [n for n in self.commands if n not in COMMANDS]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            import_module(f"{__package__}.{COMMANDS[cmd_name]}")
            for info in app.registered_commands:
                name = info.name or get_command_name(info.callback.__name__)
                if name not in self.commands:
                    self.add_command(get_command_from_info(info, pretty_exceptions_short=app.pretty_exceptions_short,
                                                           rich_markup_mode=app.rich_markup_mode), name)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args: list):
        if args and args[0] not in COMMANDS and args[0] not in self.commands:  # a typo: "did you mean" needs them all
            for name in COMMANDS:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="attncost",
    cls=CommandsOnDemand,
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
