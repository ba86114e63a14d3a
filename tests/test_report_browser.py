"""Open a report in headless Chromium with the network disabled: no console error, no request
beyond the file itself, every chart drew its SVG. The full example report's screenshot lands in the
test's tmp dir; with $ATTNCOST_SCREENSHOT_DIR set, every page's screenshot is taken and copied there.

One Chromium with one tab serves every page (plotly.js is compiled once); the tab's HTTP cache is
off, so each page loads its files as a first visit would.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-terminated JSON), so the test needs only the standard library.
Chromium is Debian's ``chromium`` package (``.ci/install-chromium.sh``): the test is skipped when
it is missing, except under CI=true, where it fails.
"""

import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_fixtures as F  # noqa: E402

from attncost.costmodel.results import Run  # noqa: E402
from attncost.costmodel.fidelity_doc import load_fidelity  # noqa: E402
from attncost.reports import (SECTIONS_FIDELITY, SECTIONS_RUN, write_fidelity_report,  # noqa: E402
                              write_prediction_report, write_run_report)

ROOT = Path(__file__).resolve().parent.parent

def _find_chromium():
    """$ATTNCOST_CHROMIUM if set (None if it does not exist), else chromium on PATH or /usr/bin."""
    given = os.environ.get("ATTNCOST_CHROMIUM")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


CHROMIUM = _find_chromium()
IN_CI = os.environ.get("CI", "").lower() == "true"

pytestmark = [pytest.mark.xdist_group("chromium")]  # one worker, with one Chromium, runs them all
if CHROMIUM is None:
    if IN_CI:
        pytest.fail("CI=true but chromium is missing: run .ci/install-chromium.sh", pytrace=False)
    pytestmark.append(pytest.mark.skip(reason="headless Chromium (/usr/bin/chromium) is not installed; "
                                              "install it with .ci/install-chromium.sh"))

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--disable-domain-reliability", "--disable-breakpad", "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--hide-scrollbars", "--force-device-scale-factor=1", "--disable-dev-shm-usage",
]


class Browser:
    """A headless Chromium driven over --remote-debugging-pipe."""

    def __init__(self, profile_dir: Path, timeout: float = 60.0):
        self.timeout = timeout
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def child_fds():  # chromium reads commands on fd 3 and writes replies on fd 4
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)  # in case either already is 3 or 4
            os.dup2(r, 3)
            os.dup2(w, 4)

        profile_dir.mkdir(parents=True, exist_ok=True)
        self.log = profile_dir.parent / "chromium-stderr.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-pipe", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                pass_fds=(3, 4), preexec_fn=child_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.w = os.fdopen(to_chrome_w, "wb", buffering=0)
        self.r = os.fdopen(from_chrome_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events: list = []

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r.fileno(), 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe: " + self.log.read_text(errors="replace")[-2000:])
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def send(self, method: str, params: dict = None, session: str = None) -> dict:
        self.next_id += 1
        mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def pump(self, seconds: float) -> None:
        """Collect events for ``seconds``."""
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self.events.append(self._read_message(end))
        except TimeoutError:
            pass

    def close(self) -> None:
        try:
            self.w.write(json.dumps({"id": 10**6, "method": "Browser.close", "params": {}}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self.w, self.r):
            try:
                f.close()
            except OSError:
                pass


class Tab:
    """One page of ``browser``, reused for every report: the renderer then compiles plotly.js once.
    The HTTP cache is off, so every page requests its files again."""

    def __init__(self, browser: Browser):
        self.b = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.sid = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Network.setCacheDisabled", {"cacheDisabled": True})

    def send(self, method: str, params: dict = None) -> dict:
        return self.b.send(method, params, self.sid)

    def evaluate(self, expression: str, wait: bool = False):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                              "awaitPromise": wait}).get("result", {}).get("value")

    def blank(self) -> None:
        """Leave the page (its late events arrive before the answer), and forget its events."""
        self.send("Page.navigate", {"url": "about:blank"})
        self.evaluate("1")
        self.b.events.clear()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium, with one tab, for the module's pages."""
    b = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        yield Tab(b)
    finally:
        b.close()


def render_in_chromium(tab: Tab, html_path: Path, shot: Path = None, width: int = 1400) -> dict:
    """Load ``html_path``; return console errors, network requests and per-plot SVG counts, and
    write a full-page screenshot to ``shot`` when given."""
    tab.blank()
    try:
        tab.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        url = html_path.resolve().as_uri()
        tab.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            state = tab.evaluate(_PROBE)
            if state and state.get("url") != url:  # the page is not there yet
                state = None
            elif state and state.get("ready"):
                break
            tab.b.pump(0.05)
        tab.evaluate(_SETTLE, wait=True)  # late errors: two frames painted and a timer turn later
        tab.b.pump(0.1)
        height = tab.evaluate("document.documentElement.scrollHeight")
        if shot is not None:
            png = tab.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True, "optimizeForSpeed": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": int(height), "scale": 1}})["data"]
            shot.write_bytes(base64.b64decode(png))
        events = list(tab.b.events)
    finally:
        tab.blank()
    return {"state": state, "errors": _errors(events, tab.sid), "requests": _requests(events, tab.sid),
            "height": height}


def _errors(events: list, sid: str) -> list:
    """The console errors, exceptions, error log entries, dialogs and failed loads of session ``sid``."""
    errors = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if e.get("sessionId") != sid:
            continue
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append("log: " + p["entry"].get("text", ""))
        elif method == "Page.javascriptDialogOpening":
            errors.append(f"dialog opened: {p.get('type')} {p.get('message')}")
        elif method == "Network.loadingFailed":
            errors.append(f"network: {p.get('errorText')} {p.get('blockedReason', '')}")
    return errors


def _requests(events: list, sid: str) -> list:
    return [e["params"]["request"]["url"] for e in events
            if e.get("sessionId") == sid and e.get("method") == "Network.requestWillBeSent"]


_SETTLE = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 0))))"

_PROBE = """(() => {
  const plots = Array.from(document.querySelectorAll('div.plot'));
  const counts = {};
  plots.forEach(p => { counts[p.id] = p.querySelectorAll('svg.main-svg').length; });
  return {ready: document.body && document.body.getAttribute('data-plots-ready') !== null,
          flag: document.body && document.body.getAttribute('data-plots-ready'),
          plots: counts, fidelity_traces: document.querySelectorAll('#fig-fidelity g.trace.scatter').length,
          fidelity_lines: document.querySelectorAll('#fig-fidelity g.trace.scatter path.js-line').length,
          scripts_with_src: document.querySelectorAll('script[src]').length,
          script_srcs: Array.from(document.querySelectorAll('script[src]')).map(s => s.getAttribute('src')),
          title: document.title, url: location.href};
})()"""


def _check(result: dict, expected_plots: int, shared: bool = False) -> None:
    """Every chart drew, no error, no request beyond local files; a script with src only in
    shared mode, and then only the plotly.min.js beside the page."""
    state = result["state"]
    assert state and state["ready"], f"charts never finished drawing: {state}"
    assert state["flag"] == str(expected_plots), state
    assert not result["errors"], result["errors"]
    foreign = [u for u in result["requests"] if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert not foreign, f"the page made network requests: {foreign}"
    assert len(state["plots"]) == expected_plots
    missing = [pid for pid, n in state["plots"].items() if n < 1]
    assert not missing, f"charts without an SVG: {missing}"
    if shared:
        assert state["script_srcs"] == ["plotly.min.js"], state["script_srcs"]
        assert [u for u in result["requests"] if u.endswith("/plotly.min.js")], result["requests"]
    else:
        assert state["scripts_with_src"] == 0


def _shot(tmp_path: Path, name: str):
    """Where a test's screenshot goes: only taken when $ATTNCOST_SCREENSHOT_DIR asks for them."""
    return tmp_path / name if os.environ.get("ATTNCOST_SCREENSHOT_DIR") else None


def _keep(shot: Path) -> None:
    out = os.environ.get("ATTNCOST_SCREENSHOT_DIR")
    if out and shot is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / shot.name)


def _example_runs() -> list:
    """The committed example results (examples/*.json that are Runs), else the fixture."""
    runs, paths = [], []
    for p in sorted(glob.glob(str(ROOT / "examples" / "*.json"))):
        try:
            runs.append(Run.load(p))
            paths.append(p)
        except ValueError:  # examples/ may hold other JSON (profiles, fidelity): not a Run
            continue
    return (runs, paths) if runs else ([F.full_run()], ["fixture: tests/report_fixtures.py"])


EXAMPLE_FIDELITY = ROOT / "examples" / "fidelity-cpu.json"  # `attncost fidelity --T 256,1024 --json` on CPU


def test_report_renders_offline(browser, tmp_path):
    """The committed example runs with the committed fidelity example: every chart, the
    cost-vs-fidelity one included, draws its SVG (its Pareto step lines too)."""
    runs, paths = _example_runs()
    html = write_run_report(runs, tmp_path / "report.html", paths=paths, fidelity=[load_fidelity(EXAMPLE_FIDELITY)],
                            fidelity_paths=[str(EXAMPLE_FIDELITY)])
    shot = tmp_path / "report.png"
    result = render_in_chromium(browser, html, shot)
    _check(result, expected_plots=7)
    assert result["state"]["fidelity_traces"] > 10
    assert result["state"]["fidelity_lines"] >= 4  # a Pareto front per (T, inputs), plus the baselines
    assert shot.stat().st_size > 50_000
    _keep(shot)
    text = html.read_text()
    for sid in SECTIONS_RUN + SECTIONS_FIDELITY:
        assert f'id="{sid}"' in text


def test_fidelity_report_alone_renders(browser, tmp_path):
    html = write_fidelity_report([load_fidelity(EXAMPLE_FIDELITY)], tmp_path / "fidelity.html",
                                 paths=[str(EXAMPLE_FIDELITY)])
    shot = _shot(tmp_path, "fidelity.png")
    result = render_in_chromium(browser, html, shot)
    _check(result, expected_plots=1)
    assert result["state"]["fidelity_lines"] >= 4
    _keep(shot)


def test_hostile_and_broken_runs_render(browser, tmp_path):
    """XSS names render as text (no alert, no extra script), OOM/error/single-point/no-ok runs draw."""
    runs = [F.xss_run(), F.single_point_run(), F.no_ok_run()]
    html = write_run_report(runs, tmp_path / "hostile.html", paths=["<x>.json", "b.json", "c.json"])
    shot = _shot(tmp_path, "hostile.png")
    result = render_in_chromium(browser, html, shot)
    _check(result, expected_plots=6)
    assert "<script>alert(1)</script>" in result["state"]["title"]  # shown as text, not run
    _keep(shot)


def test_prediction_report_renders(browser, tmp_path):
    from attncost.costmodel.estimate import estimate
    from attncost.costmodel.shape import Shape

    hw = F._hardware()
    ests = []
    for v in ("flash", "mha", "linformer", "performer", "gqa"):
        for T in (512, 2048, 8192, 32768, 131072):
            ests.append(estimate(v, Shape(T=T, d=2048, heads=16), None, hw))
    html = write_prediction_report(ests, tmp_path / "predict.html", hw,
                                   command="attncost predict --d 2048 --T 512:131072")
    shot = _shot(tmp_path, "predict.png")
    result = render_in_chromium(browser, html, shot)
    n = html.read_text().count('<div class="plot')
    _check(result, expected_plots=n)
    _keep(shot)


def test_reports_sharing_plotly_js_render_offline(browser, tmp_path):
    """Two reports written to one folder with plotly_js="shared": one plotly.min.js beside them,
    loaded by each page from its folder (CSP 'self'), every chart drawn, nothing from the network."""
    site = tmp_path / "site"
    runs, paths = _example_runs()
    pages = [write_run_report(runs, site / "report.html", paths=paths, plotly_js="shared"),
             write_fidelity_report([load_fidelity(EXAMPLE_FIDELITY)], site / "fidelity.html",
                                   paths=[str(EXAMPLE_FIDELITY)], plotly_js="shared")]
    assert sorted(p.name for p in site.iterdir()) == ["fidelity.html", "plotly.min.js", "report.html"]
    for page, plots in zip(pages, (6, 1)):
        shot = _shot(tmp_path, page.stem + "-shared.png")
        result = render_in_chromium(browser, page, shot)
        _check(result, expected_plots=plots, shared=True)
        _keep(shot)
