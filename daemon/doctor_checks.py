"""The checks behind `kioskd doctor`: each a small function of the settings returning one `Check`.

The checks only look: the one thing they create is a temporary file, to prove a directory writable. A problem that
stops the daemon or corrupts its answers (no model, a damaged model, no memory for it, an unusable state directory,
a taken port) is FAIL; one it survives is WARN (a slow CPU, little disk, and every voice problem: text chat works
without voice). The audio packages are imported only when voice is on, as in the daemon.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import http.client
import json
import logging
import platform
import shutil
import socket
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.board.report import board_report
from daemon.history import SCHEMA_VERSION
from daemon.models.catalogue import CATALOGUE, ProvisionError
from daemon.models.download import sha256_file
from daemon.models.pull import manifest_path, resolve_model_path
from daemon.settings import Settings, usable_cores

_LOGGER = logging.getLogger(__name__)

MB = 1_000_000  # Decimal, like the sizes in the catalogue ("~490 MB").
MODEL_OVERHEAD = 300 * MB  # Context, KV cache, scratch buffers and the daemon itself, beyond the weights.
DISK_WARN, DISK_FAIL = 500 * MB, 50 * MB
X86_FLAGS = ("avx2", "fma", "f16c")
# /proc/cpuinfo spells the dot-product extension "asimddp".
ARM_FLAGS = {"asimd": "asimd", "dotprod": "asimddp"}
PROBE_TIMEOUT = 1.5


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str


def ok(name: str, message: str) -> Check:
    return Check(name, Status.OK, message)


def warn(name: str, message: str) -> Check:
    return Check(name, Status.WARN, message)


def fail(name: str, message: str) -> Check:
    return Check(name, Status.FAIL, message)


# ---- model ----

def check_model(settings: Settings) -> Check:
    if not needs_local_model(settings):
        return ok("model", f"no local model: every answer comes from the upstream {settings.upstream_url}")
    try:
        path = resolve_model_path(settings)
    except ProvisionError as exc:
        return fail("model", str(exc))
    problem = unusable_model(path)
    if problem is not None:
        return fail("model", problem)
    return check_checksum(path)


def unusable_model(path: Path) -> str | None:
    """Why `path` cannot be loaded as a GGUF model at all, or None."""
    if not path.exists():
        return f"model file {path} does not exist; run `kioskd pull` or set --model / KIOSKD_MODEL"
    if not path.is_file():
        return f"model {path} is not a regular file"
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return f"cannot read model file {path}: {exc.strerror or exc}"
    if magic != b"GGUF":
        return f"{path} is not a GGUF model (it starts with {magic!r}, not b'GGUF')"
    return None


def expected_sha256(path: Path) -> tuple[str, set[str]] | None:
    """Where the model's checksum is known from and the acceptable values, or None when it is not known.

    The pull record beside the file wins: a catalogue entry may have sources that deliver different files. Without
    one, a file named like a catalogue entry, or exactly as large as one of its sources, is taken to be that model.
    """
    record = manifest_path(path)
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("sha256"), str):
            return f"its pull record {record.name}", {data["sha256"].lower()}
    size = path.stat().st_size
    for entry in CATALOGUE.values():
        if entry.filename == path.name or any(source.size == size for source in entry.sources):
            return f"catalogue model {entry.name}", {source.sha256 for source in entry.sources}
    return None


def check_checksum(path: Path) -> Check:
    expected = expected_sha256(path)
    started = time.perf_counter()
    actual = sha256_file(path)
    about = f"{path}: GGUF, {path.stat().st_size / MB:.1f} MB"
    timing = f"(hashed in {time.perf_counter() - started:.2f} s)"
    if expected is None:
        known = [entry.name for entry in CATALOGUE.values() if any(s.sha256 == actual for s in entry.sources)]
        if known:
            return ok("model", f"{about}, sha256 matches catalogue model {known[0]} {timing}")
        return warn("model", f"{about}, checksum unknown (no pull record, not a catalogue model): "
                             f"sha256 {actual} {timing}")
    source, wanted = expected
    if actual not in wanted:
        return fail("model", f"{about}, checksum mismatch: sha256 {actual}, expected {' or '.join(sorted(wanted))} "
                             f"from {source}; the file is damaged or was replaced {timing}")
    return ok("model", f"{about}, sha256 {actual[:16]}... matches {source} {timing}")


# ---- hardware ----

def check_cpu(settings: Settings) -> Check:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    board = board_report(settings)
    return cpu_verdict(cpuinfo, platform.machine(), usable_cores(), settings.threads, settings.threads_batch,
                       board=f"board profile {board['profile']} ({board['reason']})")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first CPU ("flags" on x86, "Features" on ARM)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_verdict(cpuinfo: str, machine: str, cores: int, threads: int, threads_batch: int, *,
                board: str = "") -> Check:
    flags = cpu_flags(cpuinfo)
    if machine in ("x86_64", "amd64", "AMD64"):
        wanted = {name: name for name in X86_FLAGS}
    elif machine in ("aarch64", "arm64"):
        wanted = ARM_FLAGS
    else:
        wanted = {}
    missing = [name for name, flag in wanted.items() if flag not in flags]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)} (llama.cpp generates much slower without them)")
    for setting, value in (("threads", threads), ("threads_batch", threads_batch)):
        if value > cores:
            problems.append(f"{setting} = {value} exceeds the {cores} usable cores (threads would compete)")
    summary = f"{machine or 'unknown machine'}, {cores} cores, threads {threads}, batch threads {threads_batch}"
    if board:
        summary += f", {board}"
    if problems:
        return warn("cpu", f"{summary}: {'; '.join(problems)}")
    present = f"; {' '.join(wanted)} present" if wanted else ""
    return ok("cpu", summary + present)


def mem_available(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # The kernel reports kB (KiB).
    return None


def check_memory(settings: Settings) -> Check:
    try:
        available = mem_available(Path("/proc/meminfo").read_text(encoding="utf-8"))
    except (OSError, ValueError, IndexError):
        available = None
    if available is None:
        return warn("memory", "cannot read MemAvailable from /proc/meminfo")
    return memory_verdict(available, model_bytes(settings))


def needs_local_model(settings: Settings) -> bool:
    """False only for an upstream kiosk without a local fallback (a board too small for a model)."""
    return settings.engine == "local" or settings.upstream_fallback


def model_bytes(settings: Settings) -> int:
    """The model's size: the file's, or the catalogue's when it is not pulled yet (0 when unknown)."""
    if not needs_local_model(settings):
        return 0
    with contextlib.suppress(OSError, ProvisionError):
        return resolve_model_path(settings).stat().st_size
    entry = CATALOGUE.get(settings.model_name)
    return max((source.size for source in entry.sources), default=0) if entry and settings.model is None else 0


def memory_verdict(available: int, model_size: int) -> Check:
    if model_size == 0:
        return ok("memory", f"{available / MB:.0f} MB available; the model's size is unknown, so not compared")
    need = model_size + MODEL_OVERHEAD
    summary = (f"{available / MB:.0f} MB available; the model needs about {need / MB:.0f} MB "
               f"({model_size / MB:.0f} MB weights + {MODEL_OVERHEAD / MB:.0f} MB)")
    if available < need:
        return fail("memory", f"{summary}: not enough, the model would not load or the kiosk would swap")
    if available < need * 1.5:
        return warn("memory", f"{summary}: tight, other processes or a long context may push it into swap")
    return ok("memory", summary)


# ---- state ----

def existing_ancestor(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists (what a `mkdir -p` would start from)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(settings: Settings) -> Check:
    where = existing_ancestor(settings.state_dir)
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return warn("disk", f"cannot measure free space at {where}: {exc.strerror or exc}")
    return disk_verdict(free, where)


def disk_verdict(free: int, where: Path) -> Check:
    summary = f"{free / MB:.0f} MB free at {where}"
    if free < DISK_FAIL:
        return fail("disk", f"{summary}: below {DISK_FAIL / MB:.0f} MB, history writes will fail")
    if free < DISK_WARN:
        return warn("disk", f"{summary}: below {DISK_WARN / MB:.0f} MB")
    return ok("disk", summary)


def writable_dir_problem(path: Path) -> str | None:
    """Why kioskd could not create files in directory `path` (creating it first if missing), or None."""
    base = existing_ancestor(path)
    if not base.is_dir():
        return f"{base} is a file, not a directory"
    try:
        # Permission bits do not tell the whole story (root, read-only mounts, ACLs): really create a file.
        with tempfile.NamedTemporaryFile(dir=base, prefix=".kioskd-doctor-"):
            pass
    except OSError as exc:
        return f"{base} is not writable ({exc.strerror or exc})"
    return None


def check_state_dir(settings: Settings) -> Check:
    path = settings.state_dir
    problem = writable_dir_problem(path)
    if problem is not None:
        return fail("state dir", f"state dir {path} is unusable: {problem}")
    if not path.exists():
        return ok("state dir", f"{path} does not exist yet; kioskd can create it")
    return ok("state dir", f"{path} is writable")


def check_history(settings: Settings) -> Check:
    path = settings.history_file
    if not path.exists():
        problem = writable_dir_problem(path.parent)
        if problem is not None:
            return fail("history", f"history database {path} cannot be created: {problem}")
        return ok("history", f"{path} does not exist yet; kioskd will create it")
    if not path.is_file():
        return fail("history", f"history database {path} is not a regular file")
    try:
        result, version = history_status(path)
    except sqlite3.Error as exc:
        return fail("history", f"cannot open history database {path}: {exc}")
    if result != "ok":
        return fail("history", f"history database {path} is damaged: {result}")
    if version > SCHEMA_VERSION:
        return fail("history", f"{path} has schema version {version}, newer than this kioskd ({SCHEMA_VERSION})")
    # WAL mode keeps its -wal and -shm files beside the database: a read-only directory breaks every write.
    problem = writable_dir_problem(path.parent)
    if problem is not None:
        return fail("history", f"history database {path} cannot be written: {problem}")
    return ok("history", f"{path}: {path.stat().st_size / MB:.1f} MB, quick_check ok, schema version {version}")


def history_status(path: Path) -> tuple[str, int]:
    """(quick_check result, schema version), opened read-only so the check never changes the file."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    try:
        # quick_check skips the index-content cross-check: O(N) instead of O(N log N), same page-level damage.
        result = str(db.execute("PRAGMA quick_check").fetchone()[0])
        return result, int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


# ---- network ----

def check_port(settings: Settings) -> Check:
    where = f"{settings.host}:{settings.port}"
    try:
        # asyncio's create_server (under aiohttp) treats an empty host as every interface.
        infos = socket.getaddrinfo(settings.host or None, settings.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return fail("port", f"host {settings.host!r} is not a valid address or known host name ({exc})")
    for family, _, _, _, addr in infos:
        error = bind_error(family, addr)
        if error is None:
            continue
        if error.errno == errno.EADDRINUSE:
            return port_taken(where, family, addr)
        if error.errno == errno.EADDRNOTAVAIL:
            return fail("port", f"cannot listen on {where}: {addr[0]} is not an address of this machine")
        return fail("port", f"cannot listen on {where}: {error.strerror or error}")
    return ok("port", f"{where} is free")


def bind_error(family: int, addr: tuple[object, ...]) -> OSError | None:
    """Bind and listen the way asyncio's create_server does; the error, or None if the port is free."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as asyncio sets it: sockets of a just-stopped daemon in TIME_WAIT do not block a restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(addr)
            sock.listen()
        except OSError as exc:
            return exc
    return None


def port_taken(where: str, family: int, addr: tuple[object, ...]) -> Check:
    host = str(addr[0])
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
    answer = probe_kioskd(host, int(str(addr[1])))
    if answer is None:
        return fail("port", f"port {addr[1]} ({where}) is in use by another process")
    return ok("port", f"kioskd already serving on {where} ({answer})")


def probe_kioskd(host: str, port: int) -> str | None:
    """How the kioskd on host:port is doing ("ready, model X"), or None when what answers is not a kioskd."""
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        health = get_json(conn, "/healthz")
        if health != {"status": "ok"}:
            return None
        ready = get_json(conn, "/readyz")
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    if isinstance(ready, dict) and ready.get("status") == "ready":
        return f"ready, model {ready.get('model')}"
    return "still loading its model"


def get_json(conn: http.client.HTTPConnection, path: str) -> object:
    conn.request("GET", path)
    return json.loads(conn.getresponse().read())
