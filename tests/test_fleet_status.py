"""ansible/status.yml, the fleet's health at a glance, run for real on this machine: the real `ansible-playbook`
with a local connection against a real daemon (SmolLM2) that has answered questions, next to kiosks that are not
well: a daemon that answers 503, one that answers something that is not its status, a closed port, and a kiosk
that cannot be reached at all (SSH to a closed port). Each gets its line; the play changes nothing, also under
--check, and fails only when asked to (kioskd_status_fail_on_unhealthy), and then only the kiosks not ready.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import __version__
from tests import ansible_host
from tests.conftest import AUTH, Daemon, free_port, start_daemon

pytestmark = pytest.mark.timeout(600)

HEALTHY = "kiosk-lobby"
TROUBLED = {"kiosk-503": 503, "kiosk-garbage": 200}
CLOSED = "kiosk-closed"
GONE = "kiosk-gone"
QUESTIONS = ("What time is it?", "Where is the exit?")


class _Troubled(http.server.BaseHTTPRequestHandler):
    """A daemon that is not well: /status answers `status` with a body that is not kioskd's status line."""

    status = 503

    def do_GET(self) -> None:
        body = b'{"status": "loading"}' if self.status != 200 else b"<html>\n<p>a captive portal</p>\n</html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json" if self.status != 200 else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def troubled(status: int) -> Iterator[int]:
    handler = type("Handler", (_Troubled,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def answer(d: Daemon, question: str) -> None:
    """One real answer through the OpenAI API (the tally counts those like the kiosk page's)."""
    body = json.dumps({"messages": [{"role": "user", "content": question}], "max_tokens": 6, "temperature": 0})
    request = urllib.request.Request(d.url + "/v1/chat/completions", data=body.encode(),
                                     headers={**AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        assert json.loads(response.read())["choices"][0]["finish_reason"] in {"stop", "length"}


def _inventory(path: Path, ports: dict[str, int]) -> Path:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts: dict[str, dict[str, object]] = {name: {**local, "kioskd_daemon_port": port} for name, port in ports.items()}
    # Unreachable: SSH to a port nothing listens on.
    hosts[GONE] = {"ansible_host": "127.0.0.1", "ansible_port": free_port(), "ansible_connection": "ssh",
                   "ansible_ssh_common_args": " ".join(ansible_host.SSH_OPTIONS)}
    path.write_text(json.dumps({"kiosks": {"hosts": hosts}}))  # JSON is YAML
    return path


def _status(d: Daemon) -> dict[str, object]:
    code, body = d.get("/status")
    assert code == 200, body
    line = json.loads(body)
    assert isinstance(line, dict)
    return line


@pytest.fixture(scope="module")
def fleet(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """One real kiosk that has answered QUESTIONS, the troubled ones beside it, and the inventory of all."""
    tmp_path = tmp_path_factory.mktemp("fleet")
    d = start_daemon(tmp_path, "--model", str(test_model), "--max-tokens", "6", "--temperature", "0")
    try:
        for question in QUESTIONS:
            answer(d, question)
        with troubled(503) as port_503, troubled(200) as port_garbage:
            ports = {HEALTHY: d.port, "kiosk-503": port_503, "kiosk-garbage": port_garbage, CLOSED: free_port()}
            yield d, _inventory(tmp_path / "inventory.json", ports)
    finally:
        d.stop()


def test_status_prints_one_line_per_kiosk_and_changes_nothing(fleet: tuple[Daemon, Path], tmp_path: Path) -> None:
    d, inventory = fleet
    result = ansible_host.run_status(inventory, tmp_path / "status.log")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    recaps = ansible_host.recaps(result.stdout)
    assert set(recaps) == {HEALTHY, GONE, CLOSED, *TROUBLED}, recaps
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in recaps.values()), recaps
    table = ansible_host.status_lines(result.stdout)
    assert list(table) == sorted([HEALTHY, GONE, CLOSED, *TROUBLED]), table

    # The real kiosk: what its daemon says, after the answers it gave.
    status = _status(d)
    assert status["answers_today"] == len(QUESTIONS), status
    version, model, ready, voice, answers, ttft, last_error = table[HEALTHY]
    assert version == __version__ and ready == "yes" and voice == "off", table[HEALTHY]
    assert model == f"{status['model']} ({str(status['model_sha256'])[:12]})", (model, status)
    assert answers == str(len(QUESTIONS))
    assert isinstance(status["ttft_median_s_today"], float) and ttft == f"{status['ttft_median_s_today']:.2f} s"
    assert last_error == "-" and status["last_error"] is None, status

    # The others: each says what is wrong, in one line.
    assert table["kiosk-503"] == ['DOWN: HTTP 503 from /status: {"status": "loading"}'], table
    assert table["kiosk-garbage"] == ["DOWN: HTTP 200 from /status: <html> <p>a captive portal</p> </html>"], table
    (closed,) = table[CLOSED]
    assert closed.startswith("DOWN: no answer from http://127.0.0.1:") and "Connection refused" in closed, closed
    (gone,) = table[GONE]
    assert gone.startswith("unreachable: ") and "ssh" in gone, gone

    # --check: the same lines (a GET changes nothing, so it runs in check mode too), nothing changed.
    checked = ansible_host.run_status(inventory, tmp_path / "status-check.log", "--check")
    assert checked.returncode == 0, checked.stdout[-4000:]
    assert all(c["changed"] == 0 for c in ansible_host.recaps(checked.stdout).values())
    again = ansible_host.status_lines(checked.stdout)
    assert {k: v for k, v in again.items() if k != HEALTHY} == {k: v for k, v in table.items() if k != HEALTHY}
    assert again[HEALTHY][:5] == table[HEALTHY][:5], again


def test_status_fails_on_kiosks_that_are_not_ready_only_when_asked(fleet: tuple[Daemon, Path],
                                                                   tmp_path: Path) -> None:
    """For cron or an alert: a non-zero exit, and the recap counts exactly the kiosks that are not ready as failed,
    after the table was printed."""
    _, inventory = fleet
    result = ansible_host.run_status(inventory, tmp_path / "status-alert.log",
                                     "-e", "kioskd_status_fail_on_unhealthy=true")
    assert result.returncode != 0, result.stdout[-4000:]
    recaps = ansible_host.recaps(result.stdout)
    assert {name for name, c in recaps.items() if c["failed"]} == {GONE, CLOSED, *TROUBLED}, recaps
    assert all(c["changed"] == 0 for c in recaps.values()), recaps
    assert ansible_host.status_lines(result.stdout)[HEALTHY][2] == "yes"


def test_status_playbook_is_read_only_by_construction() -> None:
    """Whatever the kiosks answer: no become, only modules that read or print, every task unchanged, the GET
    also under --check; and ansible-playbook accepts its syntax."""
    import yaml  # ships with ansible-core

    from tests.test_ansible_static import assert_ok, run, tool

    (play,) = yaml.safe_load((ansible_host.ANSIBLE / "status.yml").read_text(encoding="utf-8"))
    assert play["become"] is False and play["gather_facts"] is False and play["hosts"] == "kiosks", play
    modules = set()
    for task in play["tasks"]:
        assert task["changed_when"] is False and "become" not in task, task["name"]
        modules |= {key for key in task if key.startswith("ansible.builtin.")}
    assert modules == {"ansible.builtin.uri", "ansible.builtin.set_fact", "ansible.builtin.debug",
                       "ansible.builtin.fail"}, modules
    (get,) = [t for t in play["tasks"] if "ansible.builtin.uri" in t]
    assert get["ansible.builtin.uri"].get("method", "GET") == "GET" and get["check_mode"] is False, get
    assert get["ignore_unreachable"] is True and get["failed_when"] is False, get
    assert_ok(run(tool("ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", "status.yml"))


def test_the_dashboard_reads_what_a_real_kiosk_exports(fleet: tuple[Daemon, Path]) -> None:
    """The Grafana dashboard's queries against a real scrape of the kiosk above (GET /metrics after its answers):
    every series they name is there, with samples for the answers it gave."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_fleet_dashboards import SCRAPE_SERIES, _dashboard, _expressions, metric_names

    d, _ = fleet
    code, body = d.get("/metrics")
    assert code == 200, body[:500]
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    # Families without a labelled child yet (no error so far, say) show no sample, only their # TYPE line.
    typed = set(samples)
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            typed |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    used = {name for expr in _expressions(_dashboard()) for name in metric_names(expr)} - SCRAPE_SERIES
    assert used <= typed, f"the dashboard names series a kiosk does not export: {sorted(used - typed)}"
    assert samples["kioskd_request_success_total"] >= len(QUESTIONS), samples
    assert samples["kioskd_time_to_first_token_seconds_count"] >= len(QUESTIONS), samples
    assert samples["kioskd_model_loaded"] == 1, samples
