"""Tables that fit the terminal: a number is never cut or wrapped.

A table is declared as columns (some shown only with ``--wide``) and rows of cells. It is printed
as a table where its narrowest layout fits the console; otherwise as a vertical list, one block
per row with "header value" pairs packed into lines. Piped output is ``COLUMNS`` wide, else 100.
"""

import json
import os
from typing import List, NamedTuple, Optional, Sequence

from rich import box
from rich.console import Console
from rich.cells import cell_len
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

PIPED_WIDTH = 100  # the width of output that is not a terminal, unless COLUMNS says otherwise
WIDE_COLUMNS = 1000  # --wide: as wide as the table needs


def fit_console(console: Console, wide: bool = False) -> Console:
    """Set ``console``'s width for the command about to print: --wide as wide as a table needs;
    else COLUMNS where set, the terminal's width, or 100 columns when piped. Returns ``console``."""
    columns = os.environ.get("COLUMNS", "")
    if wide:
        console.width = WIDE_COLUMNS
    elif columns.isdigit() and int(columns) > 0:
        console.width = int(columns)
    elif console.is_terminal:
        console.width = None  # rich asks the terminal
    else:
        console.width = PIPED_WIDTH
    return console


def screen(wide: bool = False) -> Console:
    """A console for one command's output, as wide as ``fit_console`` says."""
    return fit_console(Console(highlight=False), wide)


class Column(NamedTuple):
    header: str
    justify: str = "right"
    wide: bool = False  # shown only with --wide
    wrap: bool = False  # text that may wrap at spaces (never a number)


SECTION = None  # a row of None: a break between groups of rows


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Optional[list]], *,
                wide: bool = False, title: Optional[str] = None, keys: int = 1) -> None:
    """Print ``rows`` (a list of cells per row, or ``SECTION``) under ``columns``; without ``wide``
    the columns marked ``wide`` are left out. The first ``keys`` cells of a row name it in the
    vertical layout used where the table would not fit."""
    shown = [i for i, c in enumerate(columns) if wide or not c.wide]
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, padding=(0, 1, 0, 0), title=title,
                  title_justify="left")
    for i in shown:
        c = columns[i]
        table.add_column(c.header, justify=c.justify, no_wrap=not c.wrap)
    for row in rows:
        if row is SECTION:
            table.add_section()
        else:
            table.add_row(*(row[i] for i in shown))
    if _needed(console, table) <= console.width:
        console.print(table)
        return
    _print_vertical(console, [columns[i] for i in shown], [r if r is SECTION else [r[i] for i in shown]
                                                            for r in rows], title, min(keys, len(shown)))


def _needed(console: Console, table: Table) -> int:
    """The width ``table`` needs with its numbers whole: its natural width, less what its wrapping
    (text) columns can give up by wrapping at spaces. The natural width is measured on a table of
    one row, each column's widest cell (measuring every cell of a long table costs as much as
    printing it)."""
    unbounded = console.options.update_width(10_000)
    slack = 0
    probe = Table(box=table.box, show_edge=table.show_edge, padding=table.padding, show_header=False)
    widest = []
    for col in table.columns:
        cells = [col.header, *col.cells]
        if not col.no_wrap:
            sizes = [Measurement.get(console, unbounded, c) for c in cells]
            slack += max(m.maximum for m in sizes) - max(m.minimum for m in sizes)
        probe.add_column(justify=col.justify, no_wrap=col.no_wrap)
        widest.append(max(cells, key=lambda c: _width(console, unbounded, c)))
    probe.add_row(*widest)
    return Measurement.get(console, unbounded, probe).maximum - slack


def _width(console: Console, options, cell) -> int:
    """The width of a cell on one line: its longest line (markup left out)."""
    if isinstance(cell, str):
        return max(map(cell_len, console.render_str(cell).plain.split("\n")))
    return Measurement.get(console, options, cell).maximum


def _print_vertical(console: Console, columns: List[Column], rows: list, title: Optional[str], keys: int) -> None:
    """One block per row: its key cells in bold, then "header value" pairs packed into lines that
    fit the console (a pair is never split)."""
    if title:
        console.print(title)
    width = console.width
    for row in rows:
        if row is SECTION:
            continue
        console.print(Text.from_markup(" ".join(f"[bold]{row[i]}[/]" for i in range(keys))))
        line = Text("  ")
        for c, cell in zip(columns[keys:], row[keys:]):
            pair = Text.from_markup(f"[dim]{escape(c.header.replace(chr(10), ' '))}[/] {cell}")
            if len(line) > 2 and len(line) + 3 + len(pair) > width:
                console.print(line, no_wrap=True, overflow="ignore", crop=False)
                line = Text("  ")
            if len(line) > 2:
                line.append(" · ")
            line.append_text(pair)
        if len(line) > 2:
            console.print(line, no_wrap=True, overflow="ignore", crop=False)


DATASHEET_NOTE = ("datasheet peaks, not calibrated: efficiencies are assumed, not measured on this device; "
                  "run `attncost calibrate` there and pass the profile as --hardware FILE.json")


def print_json(doc) -> None:
    """Print ``doc`` as JSON: a key of the top object (or an item of a top list) per line, and each
    item of a list there on a line of its own, every line written by json's C encoder (``indent``
    takes the pure-Python one: four times slower for a sweep of a thousand rows). NaN is refused."""
    print(json_text(doc))


def json_text(doc) -> str:
    """The text ``print_json`` prints."""
    def one(value) -> str:
        return json.dumps(value, allow_nan=False)

    def items(values: list, pad: str) -> str:
        return "[\n" + ",\n".join(pad + one(v) for v in values) + "\n" + pad[:-1] + "]" if values else "[]"

    if isinstance(doc, list):
        return items(doc, " ")
    if not isinstance(doc, dict):
        return one(doc)
    lines = (f" {one(str(k))}: {items(v, '  ') if isinstance(v, list) else one(v)}" for k, v in doc.items())
    return "{\n" + ",\n".join(lines) + "\n}" if doc else "{}"


def datasheet_warning(hw) -> Optional[str]:
    """The line every prediction on a profile not fitted to measurements carries, else None."""
    return None if hw.calibrated else f"[yellow]{escape(hw.name)}: {DATASHEET_NOTE}[/]"


# -- help screens ------------------------------------------------------------------------

# What an option takes, as --help names it (typer would print <str>, <int>, <list[str]>)
METAVARS = {"--d": "D", "--T": "T", "--batch": "N", "--variants": "LIST", "--param": "NAME=VALUE", "--hardware": "PROFILE",
            "--baseline": "VARIANT", "--kernels": "VARIANT", "--variant-heatmap": "VARIANT", "--html": "FILE",
            "--csv": "FILE", "--out": "FILE", "--output": "FILE", "--time": "RUN.json", "--model": "MODEL",
            "--dtype": "DTYPE", "--weights-dtype": "DTYPE", "--kv-dtype": "DTYPE", "--phase": "PHASE",
            "--device": "DEVICE", "--backend": "BACKEND", "--exec": "MODE", "--plotly-js": "MODE",
            "--logits": "all|last", "--inputs": "KIND", "--budget": "SECONDS", "--fidelity": "FILE.json",
            "--cp-kind": "ring|ulysses", "--max-time": "TIME", "--max-memory": "SIZE", "--max-kv": "SIZE",
            "--sort": "KEY"}


def metavar(param) -> str:
    """The name --help gives what ``param`` takes: none for a flag, else METAVARS', else N for a
    number."""
    if getattr(param, "is_flag", False):
        return ""
    long = next((o for o in param.opts if o.startswith("--")), "")
    return METAVARS.get(long) or ("N" if param.type_descriptor.annotation in (int, float) else long[2:].upper())


def _plain_metavars(command, ctx) -> None:
    """Give each option of ``command`` its ``metavar`` (none for a flag) and drop the type typer
    shows beside an argument's metavar, before its --help is printed."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = metavar(param)
        elif isinstance(param, TyperArgument) and param.metavar is not None:
            param.display_type_rich = lambda ctx: None  # the metavar (RUN.json) says it all


class PlainHelp(TyperCommand):
    """A command whose --help names what each option takes (D, T, FILE, ...) and prints nothing
    after a flag, where typer prints its Python type (<bool>, <str>, <list[str]>)."""

    def format_help(self, ctx, formatter) -> None:
        _plain_metavars(self, ctx)
        super().format_help(ctx, formatter)


class PlainHelpGroup(TyperGroup):
    """The application's group, with --help as ``PlainHelp`` prints it."""

    def format_help(self, ctx, formatter) -> None:
        _plain_metavars(self, ctx)
        super().format_help(ctx, formatter)
