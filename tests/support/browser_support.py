"""Drive the lessons in a real JupyterLab with headless Chromium, the way a learner uses them.

Three pieces, used by ``tests/test_browser.py``:

* :func:`find_chromium` -- the system Chromium (Debian's ``chromium``; Playwright's own
  browser download is not used).
* :func:`running_jupyter_lab` -- a real ``jupyter lab`` from this interpreter's environment on
  ``127.0.0.1``, a free port and a random token, with every Jupyter/IPython directory private to
  a temporary folder (the user's settings, kernels and workspaces are never read or written),
  autosave off, and stopped afterwards whatever happens, kernels included.
* :class:`LabNotebook` -- one notebook open in a page: run every cell, check that no cell or
  widget shows an error, that every widget renders, and that moving each slider or dropdown
  changes the widget's output.

Every verdict is taken on an event, never after a fixed time: the page counts the shell
messages it sends to the kernel and the kernel's "idle" status that answers each one, and a
notebook has finished running, or a moved control has had its effect, once every message sent
has been answered -- however fast or slow the machine. The waits for those events are bounded
(:class:`Timeouts`, generous hang guards): a wait that runs out raises
:class:`BrowserCheckError` naming the notebook, what was awaited and what the page showed at the
time, so a stuck page fails the test instead of hanging CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

__all__ = [
    "CHROMIUM_ARGS",
    "BrowserCheckError",
    "ControlReport",
    "LabNotebook",
    "LabServer",
    "Timeouts",
    "find_chromium",
    "launched_chromium",
    "open_page",
    "running_jupyter_lab",
]

#: Headless Chromium as root in a container: no sandbox, no GPU, no calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

# JupyterLab settings written into the private settings folder. Autosave off: the test runs
# every cell, and JupyterLab would otherwise write the new outputs into the lesson after two
# minutes. Windowing off: with it, cells scrolled out of view are not in the page at all.
_LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
}


class BrowserCheckError(AssertionError):
    """A notebook failed a browser check, or a wait for the page ran out."""


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds, in seconds, of each wait for an event that must happen: hang guards only.

    None of them decides a check that passes: each wait ends as soon as its event happens, and
    only a page or kernel that is stuck reaches a bound (CI machines are shared and slow, so the
    bounds are generous). ``run_all`` bounds executing the whole notebook (the lessons' time
    budget is a benchmark, ``benchmarks/lesson_times.py``, not a test); ``widget_change`` bounds
    one control change reaching the kernel and every message it causes being answered.
    """

    server_start: float = 120.0
    page_load: float = 120.0
    kernel_start: float = 120.0
    run_all: float = 480.0
    widget_render: float = 90.0
    widget_change: float = 120.0


# ------------------------------------------------------------------------------- the browser


@contextlib.contextmanager
def launched_chromium(executable: str) -> Iterator[Browser]:
    """Headless Chromium at ``executable``, with :data:`CHROMIUM_ARGS`, closed afterwards."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None.

    ``SPARSEGRAD_CHROMIUM`` wins; then Debian's ``/usr/bin/chromium`` (what ``.ci/run``
    installs); then whatever Chromium-like browser is on ``PATH``.
    """
    chosen = os.environ.get("SPARSEGRAD_CHROMIUM")
    if chosen:
        return chosen
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


# ------------------------------------------------------------------------------- the server


@dataclass
class LabServer:
    """A running ``jupyter lab``: where it is, how to authenticate, where its log goes."""

    root: Path
    port: int
    token: str
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path: str, workspace: str) -> str:
        """The URL opening ``path`` (relative to the server root) in its own workspace.

        A workspace per page keeps JupyterLab from restoring the previous test's notebooks
        (and starting their kernels) when the next one opens.
        """
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{path}?token={self.token}"

    def api(self, method: str, endpoint: str) -> Any:
        """Call the server's REST API; returns the decoded JSON body (None when empty)."""
        request = urllib.request.Request(
            f"{self.base_url}/api/{endpoint}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """End every session and kernel, so each notebook starts from a fresh kernel."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")
        for kernel in self.api("GET", "kernels"):
            self.api("DELETE", f"kernels/{kernel['id']}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _private_environment(state: Path) -> dict[str, str]:
    """The server's environment: every Jupyter and IPython directory under ``state``."""
    dirs = {
        "JUPYTER_CONFIG_DIR": state / "config",
        "JUPYTER_DATA_DIR": state / "data",
        "JUPYTER_RUNTIME_DIR": state / "runtime",
        "JUPYTERLAB_SETTINGS_DIR": state / "config" / "lab" / "user-settings",
        "JUPYTERLAB_WORKSPACES_DIR": state / "config" / "lab" / "workspaces",
        "IPYTHONDIR": state / "ipython",
    }
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    for plugin, values in _LAB_SETTINGS.items():
        target = dirs["JUPYTERLAB_SETTINGS_DIR"] / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = {**os.environ, **{name: str(folder) for name, folder in dirs.items()}}
    # The kernel must draw with its inline backend whatever the calling shell chose.
    env.pop("MPLBACKEND", None)
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # the debugger's frozen-modules notice
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _lab_command(root: Path, port: int, token: str, state: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # Checkpoints (written on save) go to the private folder, never next to the lessons.
        f"--FileCheckpoints.checkpoint_dir={state / 'checkpoints'}",
    ]
    if os.geteuid() == 0:  # containers and CI machines run as root; JupyterLab refuses then
        command.append("--allow-root")
    return command


def _stop(server: LabServer) -> None:
    """Stop the server and every process it started (kernels run in their own sessions)."""
    try:
        descendants = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    if server.process.poll() is None:
        with contextlib.suppress(OSError, urllib.error.URLError):
            server.shut_down_kernels()
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=20)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=10)


@contextlib.contextmanager
def running_jupyter_lab(
    root: Path, state: Path, timeouts: Timeouts = Timeouts(), attempts: int = 3
) -> Iterator[LabServer]:
    """Start ``jupyter lab`` serving ``root``, yield it, and stop it whatever happens.

    ``state`` is an empty folder for the server's private configuration, runtime files,
    settings, workspaces, checkpoints and log. The port is picked free just before the start;
    if another process takes it first the server exits and a new port is tried.
    """
    last_error = ""
    for attempt in range(attempts):
        port, token = _free_port(), secrets.token_hex(24)
        attempt_dir = state / f"attempt-{attempt}"
        env = _private_environment(attempt_dir)
        log_path = attempt_dir / "jupyter-lab.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                _lab_command(root, port, token, attempt_dir),
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = LabServer(root, port, token, log_path, process)
        try:
            if _wait_until_serving(server, timeouts.server_start):
                yield server
                return
            last_error = f"exited with code {process.returncode}:\n{server.log_tail()}"
        finally:
            _stop(server)
    raise BrowserCheckError(f"jupyter lab did not start in {attempts} attempts; {last_error}")


def _wait_until_serving(server: LabServer, timeout: float) -> bool:
    """True once the REST API answers; False if the process exits; raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            server.api("GET", "status")
            return True
        except (OSError, urllib.error.URLError):
            time.sleep(0.25)
    raise BrowserCheckError(
        f"jupyter lab did not answer on port {server.port} within {timeout:.0f} s:\n"
        f"{server.log_tail()}"
    )


# ------------------------------------------------------------------------------ the notebook

# Every page script starts with this: it finds the notebook panel by path and defines small
# helpers. JupyterLab is reachable as window.jupyterapp (--LabApp.expose_app_in_browser).
_PRELUDE = """
const app = window.jupyterapp;
const panel = app ? Array.from(app.shell.widgets('main'))
    .find(w => w.context && w.context.path === path) : undefined;
const kernel = panel && panel.sessionContext.session ? panel.sessionContext.session.kernel : null;
const status = () => kernel ? kernel.status : 'no kernel';
const cells = () => panel.content.widgets;
const source = c => c.model.sharedModel.getSource();
const pending = () => cells().map((c, i) => [c, i + 1])
    .filter(([c]) => c.model.type === 'code' && source(c).trim() && c.model.executionCount === null)
    .map(([, n]) => n);
// Shell messages the page sent that the kernel has not yet answered with its "idle" status
// (kept by _WATCH_KERNEL): the kernel has handled everything asked of it when this is empty.
const unanswered = () => Array.from(window.__sglOpen ? window.__sglOpen.values() : []);
const dialog = () => {
    const d = document.querySelector('.jp-Dialog');
    return d ? d.innerText.trim().replace(/\\s+/g, ' ').slice(0, 300) : null;
};
const signature = el => Array.from(el.querySelectorAll('.widget-output .jp-OutputArea-output'))
    .map(o => {
        const img = o.querySelector('img');
        return (o.dataset.mimeType || '') + ':' + (img ? img.src : o.textContent);
    }).join('\\n');
"""


def _script(body: str) -> str:
    return "(arg) => { const path = arg.path;\n" + _PRELUDE + body + "\n}"


_STATE = _script("""
    if (!app) return {app: false};
    if (!panel) return {app: true, panel: false, dialog: dialog()};
    return {app: true, panel: true, ready: panel.context.isReady, status: status(),
            pending: pending(), unanswered: unanswered(), dialog: dialog()};
""")

_KERNEL_IDLE = _script("""
    if (dialog()) return true;
    return !!(panel && panel.context.isReady && panel.sessionContext.isReady
              && status() === 'idle');
""")

# Keep, from now on, every shell message the page sends (a cell to execute, a control's new
# value, a widget's state) until the kernel's "idle" status answering it arrives: the kernel
# publishes one after handling each request. The kernel's overall status cannot tell this: since
# ipykernel 7, JupyterLab sends widget messages to a subshell, whose "idle" arrives while the
# main shell may still be busy, and the reverse. Removal happens on the iopubMessage signal,
# which JupyterLab emits only after the message's own handlers ran -- the Output widget has
# taken in every output sent before that "idle", and a widget has already sent (and so
# registered here) the state it sends in answer to it. So an empty list means the outputs
# on the page are final. ``sent`` counts the messages, so a move can be seen to have sent one.
_WATCH_KERNEL = _script("""
    window.__sglOpen = new Map();
    window.__sglSent = 0;
    kernel.anyMessage.connect((_, {msg, direction}) => {
        if (direction !== 'send' || msg.channel !== 'shell') return;
        window.__sglSent += 1;
        window.__sglOpen.set(msg.header.msg_id, msg.header.msg_type);
    });
    kernel.iopubMessage.connect((_, msg) => {
        if (msg.header.msg_type === 'status' && msg.content.execution_state === 'idle'
                && msg.parent_header && msg.parent_header.msg_id) {
            window.__sglOpen.delete(msg.parent_header.msg_id);
        }
    });
    app.shell.activateById(panel.id);
""")

# Nothing the page asked of the kernel is still unanswered.
_ANSWERED = _script("""
    if (dialog()) return true;
    return unanswered().length === 0;
""")

# Not awaited: the command's promise settles only when every cell has run, and a page
# evaluation has no timeout of its own; _RUN_FINISHED polls with one instead.
_RUN_ALL = _script("""
    app.shell.activateById(panel.id);
    await app.commands.execute('notebook:clear-all-cell-outputs');
    const cleared = pending().length;
    app.commands.execute('notebook:run-all-cells');
    return {cleared, code: cells().filter(c => c.model.type === 'code' && source(c).trim()).length};
""").replace("(arg) =>", "async (arg) =>")

# Done when every execute request sent has been answered and every non-empty code cell ran --
# or when running stopped early: an error output once every execute request is answered (the
# kernel aborts the cells after an error, answering each), a dialog. Widget messages are not
# awaited here: one that reaches a shell while a cell there awaits something is handled
# without a status of its own (ipykernel's shell_main). Moving a control waits for them.
_RUN_FINISHED = _script("""
    if (dialog()) return true;
    if (unanswered().includes('execute_request')) return false;
    if (pending().length === 0) return true;
    return cells().some(c => c.model.type === 'code'
        && c.model.outputs.toJSON().some(o => o.output_type === 'error'));
""")

# Problems visible in the notebook: error outputs of cells, tracebacks printed anywhere
# (widget Output areas included: ipywidgets shows a callback's exception there) and widgets
# that failed to render.
_PROBLEMS = _script("""
    const found = [];
    cells().forEach((c, i) => {
        if (c.model.type !== 'code') return;
        const where = `cell ${i + 1} (${JSON.stringify(source(c).split('\\n')[0].slice(0, 60))})`;
        const errors = c.model.outputs.toJSON().filter(o => o.output_type === 'error');
        for (const o of errors) found.push(`${where}: ${o.ename}: ${o.evalue}`);
        // An error output renders as a traceback too: report each problem once.
        if (!errors.length) for (const o of c.node.querySelectorAll(
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
            const text = o.textContent;
            if (/Traceback|Error:|Exception:/.test(text)) {
                const lines = text.trim().split('\\n');
                found.push(`${where} shows a traceback: ${lines[lines.length - 1].slice(0, 300)}`);
            }
        }
        if (c.node.textContent.includes('Error displaying widget')) {
            found.push(`${where} shows "Error displaying widget"`);
        }
    });
    return found;
""")

# Cells that hold a widget view (in the live outputs, or in the saved file: a lesson's widget
# cell must produce a widget again) and whether a view is on the page yet.
_WIDGET_CELLS = _script("""
    const saved = new Set(arg.saved);
    const result = [];
    cells().forEach((c, i) => {
        if (c.model.type !== 'code') return;
        const live = c.model.outputs.toJSON().some(o => o.data
            && o.data['application/vnd.jupyter.widget-view+json']);
        if (!live && !saved.has(i)) return;
        const area = c.outputArea.node;
        result.push({cell: i + 1, live: live,
                     rendered: !!area.querySelector('.jupyter-widgets'),
                     failed: area.textContent.includes('Error displaying widget')});
    });
    return result;
""")

_WIDGETS_SETTLED = _WIDGET_CELLS.replace(
    "return result;", "return result.every(r => r.rendered || r.failed || !r.live);"
)

# Label every top-level widget view holding controls the test knows how to move (slider
# handles, dropdown selects) with data attributes, and describe them.
_FIND_CONTROLS = _script("""
    const units = [];
    cells().forEach((c, i) => {
        if (c.model.type !== 'code') return;
        // A widget view's output element carries no mime type; its child is the view.
        const views = Array.from(c.outputArea.node.querySelectorAll(
            '.jp-OutputArea-output > .jupyter-widgets'))
            .filter(v => !v.parentElement.closest('.widget-output'));
        for (const view of views) {
            const unit = `u${units.length}`;
            view.dataset.sglUnit = unit;
            const controls = [];
            const label = el => {
                const box = el.closest('.widget-inline-hbox');
                const l = box ? box.querySelector('.widget-label') : null;
                return l ? l.textContent.trim() : '';
            };
            for (const slider of view.querySelectorAll('.widget-slider')) {
                if (slider.closest('.widget-output')) continue;
                const handle = slider.querySelector('.noUi-handle');
                if (!handle || slider.querySelector('[disabled]')) continue;
                const id = `${unit}-c${controls.length}`;
                handle.dataset.sglControl = id;
                controls.push({id, kind: 'slider', label: label(slider)});
            }
            for (const select of view.querySelectorAll('.widget-dropdown select')) {
                if (select.closest('.widget-output') || select.disabled) continue;
                const id = `${unit}-c${controls.length}`;
                select.dataset.sglControl = id;
                controls.push({id, kind: 'dropdown', label: label(select),
                               options: select.options.length});
            }
            units.push({unit, cell: i + 1, controls,
                        outputs: view.querySelectorAll('.widget-output').length});
        }
    });
    return units;
""")

_CONTROL_VALUE = _script("""
    const el = document.querySelector(`[data-sgl-control="${arg.id}"]`);
    if (!el) return null;
    if (el.tagName === 'SELECT') return {value: el.value, index: el.selectedIndex};
    return {value: el.getAttribute('aria-valuetext') || el.getAttribute('aria-valuenow'),
            now: Number(el.getAttribute('aria-valuenow')),
            max: Number(el.getAttribute('aria-valuemax'))};
""")

_UNIT_SIGNATURE = _script("""
    const view = document.querySelector(`[data-sgl-unit="${arg.unit}"]`);
    return {signature: view ? signature(view) : null, sent: window.__sglSent};
""")

# After a control moved, the verdict, taken once: the move sent its new value to the kernel
# and every message since has been answered (the callback ran, its outputs arrived, and the
# widget state sent back in answer was handled), so the output is final. 'changed' or
# 'unchanged' then compares it with the output before the move; no clock is involved.
_CHANGE_SETTLED = _script("""
    const view = document.querySelector(`[data-sgl-unit="${arg.unit}"]`);
    if (dialog()) return 'dialog: ' + dialog();
    if (window.__sglSent <= arg.sent || unanswered().length) return false;
    return signature(view) !== arg.before ? 'changed' : 'unchanged';
""")

_UNIT_PROBLEMS = _script("""
    const view = document.querySelector(`[data-sgl-unit="${arg.unit}"]`);
    const found = [];
    for (const o of view.querySelectorAll(
            '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
        const lines = o.textContent.trim().split('\\n');
        found.push(lines[lines.length - 1].slice(0, 300));
    }
    if (view.textContent.includes('Error displaying widget')) found.push('Error displaying widget');
    if (!signature(view)) found.push('its output is empty');
    return found;
""")

# Ready the page for one tall screenshot: file browser folded away, notebook scrolled to the
# top; returns the window height that shows every cell at once (the notebook's own trailing
# scroll-past-the-end space left out).
_NOTEBOOK_HEIGHT = _script("""
    app.shell.collapseLeft();
    const scroller = panel.content.node.querySelector('.jp-WindowedPanel-outer')
        || panel.content.node;
    scroller.scrollTop = 0;
    const last = cells()[cells().length - 1].node.getBoundingClientRect().bottom
        - scroller.getBoundingClientRect().top;
    return Math.ceil(window.innerHeight - scroller.clientHeight + last + 40);
""")


# Resolves after the next two animation frames: layout work queued before it has been done.
_TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


@dataclass
class ControlReport:
    """One control moved: where, from which value to which, and how long its output took."""

    cell: int
    label: str
    before: str
    after: str
    seconds: float


class LabNotebook:
    """A notebook open in JupyterLab in ``page``; ``path`` is relative to the server root.

    Methods raise :class:`BrowserCheckError` with the notebook's name in the message.
    """

    def __init__(self, page: Page, server: LabServer, path: str, timeouts: Timeouts) -> None:
        self.page, self.server, self.path, self.timeouts = page, server, path, timeouts
        self.name = Path(path).name

    # -- plumbing

    def _eval(self, script: str, **arg: Any) -> Any:
        return self.page.evaluate(script, {"path": self.path, **arg})

    def _state(self) -> str:
        try:
            state = self._eval(_STATE)
        except PlaywrightError as error:
            return f"the page could not be inspected ({error.message.splitlines()[0]})"
        if not state.get("app"):
            return "JupyterLab had not started in the page"
        if not state.get("panel"):
            return f"the notebook was not open; dialog: {state.get('dialog')}"
        pending, unanswered = state["pending"], state["unanswered"]
        return (
            f"kernel {state['status']}, document ready: {state['ready']}, "
            f"cells not yet run: {pending[:12]}{' ...' if len(pending) > 12 else ''}, "
            f"messages not yet answered by the kernel: {unanswered[:12]}, "
            f"dialog: {state['dialog']}"
        )

    def _wait(self, script: str, what: str, timeout: float, **arg: Any) -> Any:
        """Poll ``script`` in the page until it returns something truthy, at most ``timeout``."""
        try:
            handle = self.page.wait_for_function(
                script, arg={"path": self.path, **arg}, timeout=timeout * 1000, polling=250
            )
        except PlaywrightTimeoutError:
            raise BrowserCheckError(
                f"{self.name}: timed out after {timeout:.0f} s waiting for {what}; {self._state()}"
            ) from None
        return handle.json_value()

    def _fail_on_dialog(self, doing: str) -> None:
        state = self._eval(_STATE)
        if state.get("dialog"):
            raise BrowserCheckError(f"{self.name}: a dialog appeared {doing}: {state['dialog']}")

    # -- the checks, in the order a learner meets them

    def open(self, workspace: str) -> float:
        """Load JupyterLab on this notebook and wait for an idle kernel; returns seconds."""
        start = time.monotonic()
        url = self.server.lab_url(self.path, workspace)
        try:
            self.page.goto(url, timeout=self.timeouts.page_load * 1000)
            self.page.wait_for_selector(".jp-Notebook", timeout=self.timeouts.page_load * 1000)
        except PlaywrightTimeoutError:
            raise BrowserCheckError(
                f"{self.name}: timed out after {self.timeouts.page_load:.0f} s waiting for "
                f"JupyterLab to show the notebook; {self._state()}"
            ) from None
        self._wait(_KERNEL_IDLE, "the kernel to start and go idle", self.timeouts.kernel_start)
        self._fail_on_dialog("while opening the notebook")
        self._eval(_WATCH_KERNEL)
        return time.monotonic() - start

    def run_all(self) -> float:
        """Clear the outputs, run every cell, wait until all ran; returns seconds."""
        start = time.monotonic()
        started = self._eval(_RUN_ALL)
        # Cleared outputs reset the execution counts, which is what tells "ran" from "saved".
        if started["cleared"] != started["code"]:
            raise BrowserCheckError(
                f"{self.name}: clearing the outputs left {started['code'] - started['cleared']} "
                "code cells with an execution count, so a finished run cannot be recognised"
            )
        self._wait(
            _RUN_FINISHED,
            "every code cell to run and the kernel to answer every request",
            self.timeouts.run_all,
        )
        self._fail_on_dialog("while running the cells")
        return time.monotonic() - start

    def check_no_errors(self, when: str) -> None:
        """No error output, traceback or "Error displaying widget" anywhere in the notebook."""
        problems = self._eval(_PROBLEMS)
        if problems:
            raise BrowserCheckError(f"{self.name}: {when}, " + "; ".join(problems))
        pending = self._eval(_STATE)["pending"]
        if pending:
            raise BrowserCheckError(f"{self.name}: {when}, cells never ran: {pending}")

    def check_widgets_render(self, saved_widget_cells: list[int]) -> int:
        """Every cell with a widget output shows a widget view; returns how many."""
        self._wait(
            _WIDGETS_SETTLED,
            "the widgets to render",
            self.timeouts.widget_render,
            saved=saved_widget_cells,
        )
        cells = self._eval(_WIDGET_CELLS, saved=saved_widget_cells)
        for cell in cells:
            if cell["failed"]:
                raise BrowserCheckError(
                    f'{self.name}: cell {cell["cell"]} shows "Error displaying widget"'
                )
            if not cell["live"]:
                raise BrowserCheckError(
                    f"{self.name}: cell {cell['cell']} holds a widget in the saved notebook "
                    "but displayed none when run"
                )
            if not cell["rendered"]:
                raise BrowserCheckError(f"{self.name}: cell {cell['cell']}'s widget is not shown")
        return len(cells)

    def exercise_controls(self) -> list[ControlReport]:
        """Move every slider and dropdown once; each must change its widget's output."""
        reports = []
        for unit in self._eval(_FIND_CONTROLS):
            if not unit["controls"]:
                continue  # a progress bar or a display-only widget: nothing to move
            if not unit["outputs"]:
                raise BrowserCheckError(
                    f"{self.name}: the widget in cell {unit['cell']} has controls but no Output "
                    "area, so the test cannot see whether moving them does anything"
                )
            for control in unit["controls"]:
                reports.append(self._move(unit, control))
        return reports

    def _move(self, unit: dict[str, Any], control: dict[str, Any]) -> ControlReport:
        where = f"{control['kind']} {control['label']!r} of the widget in cell {unit['cell']}"
        # The output to compare with is the one left once the kernel has answered everything
        # (the previous move's callback, the widgets' state sent back after running the cells).
        self._wait(
            _ANSWERED,
            f"the kernel to answer every message before moving the {where}",
            self.timeouts.widget_change,
        )
        before = self._eval(_UNIT_SIGNATURE, unit=unit["unit"])
        value = self._eval(_CONTROL_VALUE, id=control["id"])
        element = self.page.locator(f'[data-sgl-control="{control["id"]}"]')
        start = time.monotonic()
        action_timeout = self.timeouts.widget_change * 1000
        if control["kind"] == "dropdown":
            if control["options"] < 2:
                raise BrowserCheckError(f"{self.name}: {where} offers a single option")
            element.select_option(index=(value["index"] + 1) % control["options"])
        else:
            # One keyboard step, as a learner would nudge it; down from the top of the range.
            key = "ArrowLeft" if value["now"] >= value["max"] else "ArrowRight"
            element.press(key, timeout=action_timeout)
        after = self._eval(_CONTROL_VALUE, id=control["id"])
        if after["value"] == value["value"]:
            raise BrowserCheckError(f"{self.name}: {where} did not move (still {value['value']})")
        moved = f"{where} from {value['value']} to {after['value']}"
        outcome = self._wait(
            _CHANGE_SETTLED,
            f"the output after moving the {moved}",
            self.timeouts.widget_change,
            unit=unit["unit"],
            before=before["signature"],
            sent=before["sent"],
        )
        if outcome != "changed":
            if outcome == "unchanged":
                raise BrowserCheckError(
                    f"{self.name}: moving the {moved} left its output (plot and text) unchanged"
                )
            raise BrowserCheckError(f"{self.name}: moving the {moved} opened a {outcome}")
        problems = self._eval(_UNIT_PROBLEMS, unit=unit["unit"])
        if problems:
            raise BrowserCheckError(
                f"{self.name}: after moving the {moved}, the widget shows: " + "; ".join(problems)
            )
        return ControlReport(
            unit["cell"], control["label"], value["value"], after["value"], time.monotonic() - start
        )

    def screenshot(self, target: Path, max_height: int = 32_000) -> None:
        """Save the whole notebook as one tall PNG (the window is stretched to fit it).

        The file browser is folded away and the notebook scrolled to the top first; a notebook
        taller than ``max_height`` pixels is cut there.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        viewport = self.page.viewport_size or {"width": 1280, "height": 900}
        try:
            height = int(self._eval(_NOTEBOOK_HEIGHT))
            target_height = min(height, max_height)
            self.page.set_viewport_size({"width": viewport["width"], "height": target_height})
            # JupyterLab lays itself out again on the window's resize event, in an animation
            # frame (Lumino's message loop): wait for the new size, then for two frames.
            self.page.wait_for_function(
                "h => window.innerHeight === h", arg=target_height, timeout=60_000
            )
            self.page.evaluate(_TWO_FRAMES)
            self.page.screenshot(path=str(target), timeout=60_000)
        finally:
            self.page.set_viewport_size(viewport)


def open_page(browser: Browser) -> Page:
    """A fresh page in a fresh browser context (no cookies or storage shared between tests)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    return context.new_page()
