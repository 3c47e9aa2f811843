"""What a group of processes holds in memory, from /proc: the kernel's RSS and PSS (smaps_rollup), and PSS among
the group's own processes only (pagemap), which is what the same processes would have on a device of their own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Usage:
    """Memory of a group of processes in kB, summed over them (PSS splits each shared page among its users)."""

    processes: int = 0
    rss: int = 0
    pss: int = 0
    pss_anon: int = 0
    pss_file: int = 0
    pss_shmem: int = 0
    swap: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def mb(self, attr: str) -> float:
        return round(float(getattr(self, attr)) / 1024, 1)


_ROLLUP = {"Rss": "rss", "Pss": "pss", "Pss_Anon": "pss_anon", "Pss_File": "pss_file", "Pss_Shmem": "pss_shmem",
           "Swap": "swap"}


def process_usage(pid: int) -> Usage:
    usage = Usage(processes=1)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in _ROLLUP:
            setattr(usage, _ROLLUP[key], int(value.split()[0]))
    return usage


def descendants(root: int) -> list[int]:
    """`root` and every process below it (Chromium's zygotes, renderers, GPU and utility processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def tree_usage(root: int) -> Usage:
    total = Usage()
    for pid in descendants(root):
        with contextlib.suppress(OSError):  # a helper process may exit between the listing and the read
            total = total + process_usage(pid)
    return total


def resident_pages(pid: int) -> dict[str, Any]:
    """The page frames a process has resident, anonymous and file-backed (shared memory counts as file), from
    /proc/PID/pagemap (root only: others read zeros), each frame once."""
    import numpy as np

    frames: dict[str, list[Any]] = {"anon": [], "file": []}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, kind in _resident_ranges(pid):
            for chunk in range(start, end, _CHUNK):
                pagemap.seek(chunk // PAGE * 8)
                entries = np.frombuffer(pagemap.read((min(end, chunk + _CHUNK) - chunk) // PAGE * 8), dtype="<u8")
                frames[kind].append(entries[(entries >> 63) == 1] & _PFN_MASK)
    empty = np.zeros(0, dtype="<u8")
    return {kind: np.unique(np.concatenate(parts)) if parts else empty for kind, parts in frames.items()}


PAGE = os.sysconf("SC_PAGE_SIZE")
_CHUNK = 64 * 1024 * 1024
_PFN_MASK = (1 << 55) - 1


def _resident_ranges(pid: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, 'anon' | 'file') of every mapping with resident pages, from /proc/PID/smaps."""
    header: list[str] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        words = line.split()
        if "-" in words[0] and not words[0].endswith(":"):
            header = words
        elif words[0] == "Rss:" and int(words[1]) > 0 and header:
            start, end = (int(x, 16) for x in header[0].split("-"))
            yield start, end, "file" if header[4] != "0" else "anon"


def appliance_pss(parts: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """PSS in MB per part, each resident page divided among the appliance's processes that map it, and only
    those: the kernel's PSS also divides by unrelated processes (on this shared machine, other engineers'
    benchmarks map the same model file and libraries), which a device does not run."""
    import numpy as np

    if os.geteuid() != 0:
        raise PermissionError("PSS among the appliance's processes reads page frames from /proc/PID/pagemap, which "
                              "only root may: run the bench as root")
    pages = _pages_of([pid for pids in parts.values() for pid in pids])
    every = np.concatenate([f for p in pages.values() for f in p.values()] or [np.zeros(0, dtype="<u8")])
    frames, users = np.unique(every, return_counts=True)
    out = {}
    for name, pids in parts.items():
        share = {kind: 0.0 for kind in ("anon", "file")}
        for pid in (p for p in pids if p in pages):
            for kind, mine in pages[pid].items():
                share[kind] += float(np.sum(1.0 / users[np.searchsorted(frames, mine)]))
        out[name] = {k: round(v * PAGE / 2**20, 1) for k, v in share.items()}
        out[name]["pss"] = round(out[name]["anon"] + out[name]["file"], 1)
    return out


def _pages_of(pids: list[int]) -> dict[int, dict[str, Any]]:
    pages = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # a helper process may exit between the listing and the read
            pages[pid] = resident_pages(pid)
    return pages


def mapping_kb(pid: int, path: Path) -> dict[str, int]:
    """Resident (Rss), Pss and locked kB of every mapping of `path` in the process."""
    out, inside = {"Rss": 0, "Pss": 0, "Locked": 0}, False
    target = str(path.resolve())
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=5)
        if "-" in first[0] and len(first) >= 5:  # a mapping's header line
            inside = len(first) == 6 and first[5] == target
        elif inside and first[0].rstrip(":") in out:
            out[first[0].rstrip(":")] += int(first[1])
    return out


@dataclass
class Part:
    """One part of the appliance: the kernel's figures (smaps_rollup) and its own PSS among the appliance's
    processes (appliance_pss), in MB."""

    processes: int
    rss_mb: float
    kernel_pss_mb: float
    pss_mb: float
    anon_mb: float
    file_mb: float

    @classmethod
    def sum(cls, parts: list[Part], sign: tuple[int, ...] = ()) -> Part:
        signs = sign or (1,) * len(parts)
        return cls(*(round(sum(s * getattr(p, f) for s, p in zip(signs, parts, strict=True)), 1)
                     for f in cls.__dataclass_fields__))


def snapshot(roots: dict[str, int]) -> dict[str, Part]:
    """Each part's memory: the process `roots[name]` and everything below it."""
    pids = {name: descendants(root) for name, root in roots.items()}
    own = appliance_pss(pids)
    out = {}
    for name in pids:
        kernel = tree_usage(roots[name])
        out[name] = Part(kernel.processes, kernel.mb("rss"), kernel.mb("pss"), own[name]["pss"], own[name]["anon"],
                         own[name]["file"])
    return out
