"""Where a report's plotly.js comes from: inlined in the page (``inline``, the default: one file
that works anywhere, about 5 MB), or one ``plotly.min.js`` beside the pages (``shared``: reports
written to one folder share a single copy and stay offline; the page loads it by a relative path).
"""

from pathlib import Path

from ..costmodel.atomic import write_atomic

PLOTLY_JS_MODES = ("inline", "shared")
PLOTLY_FILE = "plotly.min.js"
_BANNER = "* plotly.js v"  # how a plotly.js bundle starts (after "/**\n")


def bundle() -> str:
    """plotly.js, as the installed plotly package ships it."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def write_shared(folder) -> Path:
    """Write ``plotly.min.js`` into ``folder`` unless the same bundle is there already; replace
    an older plotly.js bundle of that name; refuse (FileExistsError) to replace any other file."""
    path = Path(folder) / PLOTLY_FILE
    js = bundle()
    if path.is_file():
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(200)
        if _BANNER not in head:
            raise FileExistsError(f"{path} exists and is not plotly.js: not replaced (move it, or use "
                                  "--plotly-js inline)")
        if path.stat().st_size == len(js.encode("utf-8")) and path.read_text(encoding="utf-8") == js:
            return path
    write_atomic(path, js)
    return path


def write_page(path, html: str, plotly_js: str) -> Path:
    """Write a page atomically, and in "shared" mode the plotly.js it loads beside it."""
    path = Path(path)
    if plotly_js == "shared":
        write_shared(path.parent)
    write_atomic(path, html)
    return path
