"""`attncost report`: one self-contained HTML page from one or more results files."""

import json
from pathlib import Path
from typing import List, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .errors import fail
from .main import app

console = Console(highlight=False)


def _load_run(path: Path):
    from ..costmodel.results import Run

    if not path.exists():
        raise fail(f"no such results file: {path}")
    if path.is_dir():
        raise fail(f"{path} is a directory, not a results file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise fail(f"cannot read {path}: {getattr(err, 'strerror', None) or err}")
    try:
        json.loads(text)
    except ValueError as err:
        raise fail(f"{path} is not JSON ({err.msg} at line {err.lineno})")
    try:
        return Run.model_validate_json(text)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "top level"
        raise fail(f"{path} is not an attncost results file ({where}: {e['msg']})")


def _check_variant(name: Optional[str], flag: str) -> None:
    from ..costmodel.variants import NAMES

    if name is not None and name not in NAMES:
        raise fail(f"{flag}: unknown variant {name!r}; choose from {', '.join(NAMES)}")


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., show_default=False, metavar="RUN.json", help="One or more results files of "
                                      "`attncost profile` (several: compared on the same charts)."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The HTML file to write."),
    variant_heatmap: Optional[str] = typer.Option(
        None, "--variant-heatmap", help="The variant of the speedup heatmap (default: the first with a crossover)."),
    baseline: str = typer.Option("flash", "--baseline", help="The variant others are compared with."),
    hardware: Optional[str] = typer.Option(
        None, "--hardware", help="A hardware profile (name or JSON file) for the roofline ceilings and the "
                                 "heatmap, instead of the one each run names."),
) -> None:
    """Write one self-contained HTML report (works offline) from results files."""
    _check_variant(baseline, "--baseline")
    _check_variant(variant_heatmap, "--variant-heatmap")
    loaded = [_load_run(p) for p in runs]
    hw = None
    if hardware is not None:
        from ..costmodel.hardware import get_hardware

        try:
            hw = get_hardware(hardware)
        except Exception as err:  # HardwareError and whatever a bad profile file raises
            raise fail(f"--hardware: {err}")
    if output.exists() and output.is_dir():
        raise fail(f"-o {output} is a directory; give a file name such as {output / 'report.html'}")
    from ..reports import write_run_report

    try:
        path = write_run_report(loaded, output, paths=[str(p) for p in runs], hardware=hw, baseline=baseline,
                                heatmap_variant=variant_heatmap)
    except OSError as err:
        raise fail(f"cannot write {output}: {err.strerror or err}")
    n = sum(len(r.points) for r in loaded)
    console.print(f"Report written to [bold]{escape(str(path.resolve()))}[/] ({len(loaded)} "
                  f"run{'s' if len(loaded) > 1 else ''}, {n} point{'s' if n != 1 else ''})", soft_wrap=True)
