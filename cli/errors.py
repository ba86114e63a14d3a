"""Clear failures: one plain sentence on stderr, exit code 2, no traceback."""

import typer
from rich.console import Console
from rich.markup import escape

_err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print ``message`` as one sentence and return the Exit to raise."""
    message = message.strip()
    if not message.endswith("."):
        message += "."
    _err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)  # its brackets as written
    return typer.Exit(code)
