"""Run a notebook in a real JupyterLab in headless Chromium, as a student would, and keep screenshots of it.

nbclient (tests/test_notebook.py) checks what the kernel sends; this checks what the browser shows. The script

1. copies the notebook into a temporary folder laid out as the repository (``repo/examples/NOTEBOOK`` with
   ``repo/src`` and ``repo/.data`` linked to this repository's, ``shared`` linked to ``../shared``), so its first
   cell finds itself "in this repository" and takes data and weights from ../shared and .data/ (nothing is
   unpacked again); the repository's copy is never opened by JupyterLab, so never saved over;
2. starts ``jupyter lab`` of this Python's environment on 127.0.0.1 (a free port, a random token, no browser),
   its root the temporary ``repo/``, with a python3 kernel of this Python importing ``src/`` first, and its
   settings, workspaces, runtime files, caches and temporary files all in the temporary folder;
3. opens the notebook in headless Chromium (Selenium), runs JupyterLab's command ``notebook:run-all-cells``
   (Run > Run All Cells), and waits until the kernel is idle and every code cell has an execution count;
4. fails (exit 1) if a cell's output is an error, or a stderr output box shows "Traceback" or "Error"; other
   stderr boxes (warnings, progress bars) are printed, not failed;
5. saves screenshots to ``--shots DIR``: the top of the notebook, then each markdown heading ("# ...", "## 5. ...")
   scrolled to the top of the window, followed down its section one window at a time (at most ``--pages``).

It prints one line: ``notebook_in_lab: NOTEBOOK: N/M code cells run, E errors, S s`` (and the load average).
The server, its kernels and the browser are always stopped and the temporary folder removed.

    PYTHONPATH=$PWD/src nice -n 5 .venv/bin/python benchmarks/notebook_in_lab.py --shots ../lab-shots
    ... benchmarks/notebook_in_lab.py path/to/other.ipynb --shots DIR --timeout 600

Keep ``--shots`` outside the repository (nothing else is written there). Needs jupyterlab and selenium in this
Python's environment, and chromium + chromedriver (``--chromium``, ``--chromedriver``). Standard library and
selenium only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WARMSTART_SHARED", REPO.parent / "shared"))
#: JupyterLab settings for a clean, deterministic page: every cell rendered (no windowing, so every output is in
#: the DOM), no news / update notifications over the notebook
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}
#: JavaScript: the state of the notebook in the main area, from JupyterLab's own models
STATE_JS = """
const nb = window.__notebook;
if (!nb || !nb.content || !nb.sessionContext) { return null; }
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
const cells = [];
const model = nb.content.model;
for (let i = 0; i < model.cells.length; i++) {
  const c = model.cells.get(i);
  if (c.type !== 'code') { continue; }
  const errors = [];
  for (let j = 0; j < c.outputs.length; j++) {
    const o = c.outputs.get(j).toJSON();
    if (o.output_type === 'error') { errors.push(o.ename + ': ' + o.evalue); }
  }
  cells.push({index: i, count: c.executionCount, errors: errors});
}
return {kernel: kernel ? kernel.status : null, busy: nb.sessionContext.kernelDisplayStatus, cells: cells};
"""
#: JavaScript: find the notebook at path arguments[0] among the main area's widgets (headless, no widget has the
#: focus, so shell.currentWidget stays null until a click), keep it as window.__notebook, hide the side bar; true
#: once its kernel is idle
OPEN_JS = """
const app = window.jupyterapp;
if (!app || !app.shell) { return false; }
const nb = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === arguments[0]);
if (!nb || !nb.content || !nb.content.model || !nb.sessionContext) { return false; }
window.__notebook = nb;
app.shell.activateById(nb.id);
app.shell.collapseLeft();
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
return !!(kernel && kernel.status === 'idle');
"""
#: JavaScript: the text of every stderr output box in the page, with the index of its cell
STDERR_JS = """
const out = [];
document.querySelectorAll('.jp-Notebook .jp-Cell').forEach((cell, i) => {
  cell.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
      .forEach(box => out.push([i, box.innerText]));
});
return out;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lay_out(notebook: Path, tmp: Path, repository: bool) -> tuple[Path, Path]:
    """The root folder for JupyterLab and the notebook's path relative to it, in ``tmp``."""
    if not repository:  # another notebook: alone in a folder of its own
        root = tmp / "root"
        root.mkdir()
        shutil.copy(notebook, root / notebook.name)
        return root, Path(notebook.name)
    root = tmp / "repo"
    (root / "examples").mkdir(parents=True)
    shutil.copy(notebook, root / "examples" / notebook.name)
    (root / "src").symlink_to(REPO / "src")
    if (REPO / ".data").exists():
        (root / ".data").symlink_to((REPO / ".data").resolve())
    if SHARED.is_dir():
        (tmp / "shared").symlink_to(SHARED.resolve())
    return root, Path("examples") / notebook.name


def environment(tmp: Path) -> dict[str, str]:
    """The server's (and so the kernel's) environment: this repository's src first, every Jupyter/IPython/matplotlib
    folder and every temporary file in ``tmp``; no variable that would send warmstart somewhere else."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WARMSTART_MIRROR", "WARMSTART_BASE_URL", "WARMSTART_DATA_ROOT", "WARMSTART_OFFLINE")}
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": False}}))
    settings = tmp / "lab" / "user-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    for sub in ("tmp", "config", "runtime", "data", "ipython", "mpl", "cache", "lab/workspaces"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO / "src")]
                                      + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
        "JUPYTER_PATH": str(tmp / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab" / "workspaces"),
        "IPYTHONDIR": str(tmp / "ipython"), "MPLCONFIGDIR": str(tmp / "mpl"), "TMPDIR": str(tmp / "tmp"),
        "WARMSTART_CACHE_DIR": str(tmp / "cache"), "JUPYTER_PLATFORM_DIRS": "1",
    })
    return env


def start_lab(root: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str, str]:
    """``jupyter lab`` on 127.0.0.1, in a process group of its own (its kernels with it); waits until it answers."""
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers run as root; the server refuses it otherwise
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, env=env, cwd=root, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                return server, url, token
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer at {url} in 120 s:\n{log.read_text()[-3000:]}")


def stop_lab(server: subprocess.Popen, url: str | None, token: str | None) -> None:
    """Ask the server to shut down (it stops its kernels), then end its process group, by its id."""
    if server.poll() is None and url:
        try:
            req = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=10).close()
            server.wait(timeout=30)
        except Exception:  # noqa: BLE001 - falls through to the signals below
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)  # the group this script started: the server and its kernels
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue
    try:  # kernels (same group) may outlive the server briefly
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def browser(chromium: str, chromedriver: str, width: int, height: int, tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium'}",
                "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(chromedriver, log_output=str(tmp / "chromedriver.log")), options=opts)


def wait_for(driver, what, timeout: float, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(poll)
    return None


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "section"


#: JavaScript: the markdown headings (h1, h2) of the notebook, in order; the notebook's scrolled element
HEADINGS = "document.querySelectorAll('.jp-Notebook .jp-MarkdownOutput h1, .jp-Notebook .jp-MarkdownOutput h2')"
SCROLLER = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer')"


def screenshots(driver, shots: Path, pages: int) -> list[Path]:
    """Every markdown heading (h1, h2) at the top of the window, followed down its section a window at a time until
    the next heading comes into view or the notebook ends; first the top of the notebook, unless it is a heading."""
    shots.mkdir(parents=True, exist_ok=True)
    saved = []

    def shoot(name: str) -> None:
        time.sleep(0.4)  # let the scroll settle and images paint
        saved.append(shots / name)
        driver.save_screenshot(str(saved[-1]))

    def next_heading_top(k: int) -> float | None:  # heading k's top, relative to the window; None: no such heading
        return driver.execute_script(f"const h = {HEADINGS}[arguments[0]];"
                                     "return h ? h.getBoundingClientRect().top : null;", k)

    driver.execute_script(f"{SCROLLER}.scrollTop = 0;")
    if not driver.execute_script("return !!document.querySelector('.jp-Notebook .jp-Cell').querySelector('h1, h2');"):
        shoot("00-top.png")
    headings = driver.execute_script(f"return Array.from({HEADINGS}).map(h => h.innerText.replace('¶', '').trim());")
    window = driver.execute_script("return window.innerHeight;")
    for k, text in enumerate(headings, 1):
        driver.execute_script(f"{HEADINGS}[arguments[0]].scrollIntoView({{block: 'start'}});", k - 1)
        for page in range(1, pages + 1):
            if page > 1:
                more = driver.execute_script(  # is any of the notebook's last cell below the window?
                    f"const s = {SCROLLER}; const cells = document.querySelectorAll('.jp-Notebook .jp-Cell');"
                    "return cells[cells.length - 1].getBoundingClientRect().bottom > "
                    "s.getBoundingClientRect().bottom + 10;")
                moved = more and driver.execute_script(
                    f"const s = {SCROLLER}; const before = s.scrollTop; s.scrollTop += s.clientHeight - 40;"
                    "return s.scrollTop - before;")
                top = next_heading_top(k)
                if not moved or (top is not None and top < 0):
                    break
            shoot(f"{k:02d}-{slug(text)}-{page}.png")
            top = next_heading_top(k)
            if top is not None and top < window:
                break  # the next section is already on this screenshot
    return saved


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", nargs="?", default=str(REPO / "examples" / "lecture.ipynb"))
    p.add_argument("--shots", required=True, help="folder for the screenshots (created)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for all cells (default 1800)")
    p.add_argument("--pages", type=int, default=4, help="screenshots at most per section (default 4)")
    p.add_argument("--size", default="1400x1000", help="browser window WIDTHxHEIGHT (default 1400x1000)")
    p.add_argument("--place", choices=("repository", "alone"), default=None,
                   help="run the copy in a folder laid out as this repository (default for examples/*.ipynb), "
                        "or alone in an empty folder (default for any other notebook)")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    args = p.parse_args()
    notebook = Path(args.notebook).resolve()
    width, height = (int(v) for v in args.size.lower().split("x"))
    # the repository's own notebooks run as in the repository (../shared, .data/); any other alone in a folder
    repository = (args.place or ("repository" if notebook.parent == REPO / "examples" else "alone")) == "repository"

    tmp = Path(tempfile.mkdtemp(prefix="notebook-in-lab-"))
    server = driver = url = token = None
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    try:
        root, rel = lay_out(notebook, tmp, repository)
        env = environment(tmp)
        server, url, token = start_lab(root, env, tmp / "lab.log")
        driver = browser(args.chromium, args.chromedriver, width, height, tmp)
        driver.set_script_timeout(30)
        driver.get(f"{url}/lab/tree/{rel.as_posix()}?token={token}")
        ready = wait_for(driver, lambda: driver.execute_script(OPEN_JS, rel.as_posix()), 180)
        if not ready:
            raise RuntimeError("the notebook did not open with an idle kernel in 180 s")
        n_code = len(driver.execute_script(STATE_JS)["cells"])
        # a click into the notebook, as a student's, gives it the focus: Run All acts on the current notebook
        driver.find_element("css selector", ".jp-Notebook .jp-Cell").click()
        if not wait_for(driver, lambda: driver.execute_script(
                "return window.jupyterapp.shell.currentWidget === window.__notebook;"), 30):
            raise RuntimeError("a click into the notebook did not make it the current widget")
        t0 = time.monotonic()
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

        def done():
            s = driver.execute_script(STATE_JS)
            stuck = [c for c in s["cells"] if c["errors"]]
            if stuck:  # a failed cell stops Run All: the cells after it never run
                return s
            return s if s["kernel"] == "idle" and all(c["count"] for c in s["cells"]) else None

        time.sleep(2)
        state = wait_for(driver, done, args.timeout, poll=2)
        seconds = time.monotonic() - t0
        if state is None:
            state = driver.execute_script(STATE_JS)
            print(f"notebook_in_lab: timed out after {args.timeout:.0f} s; kernel {state['kernel']}", file=sys.stderr)
        time.sleep(1)  # the last outputs render
        ran = sum(1 for c in state["cells"] if c["count"])
        # cells are numbered from 1, markdown cells included, as in the notebook
        errors = [f"cell {c['index'] + 1}: {e}" for c in state["cells"] for e in c["errors"]]
        failed = {c["index"] for c in state["cells"] if c["errors"]}
        for i, text in driver.execute_script(STDERR_JS):
            lines = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]
            if i in failed:  # an error output is drawn as a stderr box too: counted once, above
                continue
            if re.search(r"Traceback|Error", text):
                errors.append(f"cell {i + 1} stderr: {' | '.join(lines[-3:])}")
            else:
                print(f"stderr, cell {i + 1}: {' | '.join(lines[:3])}{' | ...' if len(lines) > 3 else ''}")
        saved = screenshots(driver, Path(args.shots), args.pages)
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"notebook_in_lab: {notebook.name}: {ran}/{n_code} code cells run, {len(errors)} errors, "
              f"{seconds:.0f} s to run all ({time.monotonic() - started:.0f} s in all), load {load0:.1f} -> "
              f"{os.getloadavg()[0]:.1f}, {len(saved)} screenshots in {args.shots}")
        return 0 if ran == n_code and not errors else 1
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            stop_lab(server, url, token)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:  # the server or the notebook did not come up: say why in one line, then its log
        first, _, rest = str(e).partition("\n")
        print(f"error: {first}; see the log below{chr(10) + rest if rest else ''}", file=sys.stderr)
        sys.exit(2)
