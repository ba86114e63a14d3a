"""`attncost report`: one self-contained HTML page from one or more results files."""

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .app import app
from .errors import fail
from .layout import PlainHelp
from .options import (REPORT_FILE, check_choice, check_output, load_fidelity_file, load_hardware, load_run,
                      parse_variants)

console = Console(highlight=False)


@app.command(cls=PlainHelp)
def report(
    runs: Optional[List[Path]] = typer.Argument(None, show_default=False, metavar="RUN.json",
                                                help="One or more results files of `attncost profile` (several: "
                                                     "compared on the same charts); none with --fidelity."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The HTML file to write."),
    variant_heatmap: Optional[str] = typer.Option(
        None, "--variant-heatmap", help="The variant of the speedup heatmap (default: the first with a crossover)."),
    baseline: str = typer.Option("flash", "--baseline", help="The variant others are compared with."),
    hardware: Optional[str] = typer.Option(
        None, "--hardware", help="A hardware profile (name or JSON file) for the roofline ceilings and the "
                                 "heatmap, instead of the one each run names."),
    fidelity: Optional[List[Path]] = typer.Option(
        None, "--fidelity", metavar="FILE.json", help="Output of `attncost fidelity --json`: adds a cost-vs-fidelity "
                                                      "chart (Pareto front per T). Repeatable."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an -o file that is not an attncost report."),
    plotly_js: str = typer.Option("inline", "--plotly-js", help="inline: plotly.js inside the page (one file that "
                                  "works anywhere); shared: one plotly.min.js beside the page, shared by the reports "
                                  "written to that folder (both work offline)."),
) -> None:
    """Write one self-contained HTML report (works offline) from results files."""
    runs = list(runs or [])
    fidelity = list(fidelity or [])
    if not runs and not fidelity:
        raise fail("Missing argument RUN.json: give one or more results files of `attncost profile`, "
                   "or --fidelity FILE.json")
    baseline = parse_variants(baseline, "--baseline")[0]
    from ..reports import PLOTLY_JS_MODES

    check_choice(plotly_js, PLOTLY_JS_MODES, "--plotly-js")
    if variant_heatmap is not None:
        variant_heatmap = parse_variants(variant_heatmap, "--variant-heatmap")[0]
    loaded = [load_run(p) for p in runs]
    fid_docs = [load_fidelity_file(p) for p in fidelity]
    hw = None if hardware is None else load_hardware(hardware)
    check_output(output, "-o", "report.html", kind=REPORT_FILE, inputs=runs + fidelity + [hardware],
                 overwrite=overwrite)
    from ..reports import write_fidelity_report, write_run_report

    try:
        if loaded:
            path = write_run_report(loaded, output, paths=[str(p) for p in runs], hardware=hw, baseline=baseline,
                                    heatmap_variant=variant_heatmap, fidelity=fid_docs or None,
                                    fidelity_paths=[str(p) for p in fidelity], plotly_js=plotly_js)
        else:
            path = write_fidelity_report(fid_docs, output, paths=[str(p) for p in fidelity], hardware=hw,
                                         plotly_js=plotly_js)
    except OSError as err:
        raise fail(f"-o {output}: cannot write there ({err.strerror or err})")
    n = sum(len(r.points) for r in loaded)
    what = []
    if loaded:
        what.append(f"{len(loaded)} run{'s' if len(loaded) > 1 else ''}, {n} point{'s' if n != 1 else ''}")
    if fid_docs:
        nf = sum(len(d.points) for d in fid_docs)
        what.append(f"{len(fid_docs)} fidelity file{'s' if len(fid_docs) > 1 else ''}, {nf} point{'s' if nf != 1 else ''}")
    console.print(f"Report written to [bold]{escape(str(path.resolve()))}[/] ({'; '.join(what)})", soft_wrap=True)
