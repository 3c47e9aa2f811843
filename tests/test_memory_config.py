"""The 2 GB board configuration (docs/config-2gb.toml) and the memory accounting bench/bench_memory.py uses.

The configuration must load through the daemon's own settings parser, say what README's "A 2 GB board" says, and
a typo in a copy of it must be refused by name (a silently ignored key would leave the board on the defaults,
which bench_memory measured at ~2.5 GB). The accounting must divide a page shared by two processes between them
and give a process alone all of its pages, whoever else on the machine maps them.
"""

from __future__ import annotations

import mmap
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bench.proc_memory import appliance_pss, descendants, process_usage
from daemon.settings import SettingsError, load_settings
from tests.conftest import ROOT

CONFIG = ROOT / "docs" / "config-2gb.toml"


def test_the_2gb_configuration_loads_through_the_settings() -> None:
    settings = load_settings(config=CONFIG, environ={})
    assert (settings.n_ctx, settings.n_batch, settings.context_cache) == (2048, 128, 1)
    # One voice language: no second Vosk model and no second Piper voice are loaded.
    assert settings.speech_model_zh is None and settings.tts_voice_zh is None


def test_readme_shows_the_same_configuration() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A 2 GB board", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None, "README's 'A 2 GB board' has no TOML block"
    assert tomllib.loads(block.group(1)) == tomllib.loads(CONFIG.read_text())


def test_a_misspelled_setting_in_the_configuration_is_refused_by_name(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text(CONFIG.read_text().replace("context_cache", "context_cahce"))
    with pytest.raises(SettingsError, match=r"unknown setting.*context_cahce"):
        load_settings(config=broken, environ={})


_READER = ("import mmap, sys; f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ);"
           "n = sum(m[i] for i in range(0, len(m), 4096)) if sys.argv[2] == 'map' else 0;"
           "print('ready', flush=True); sys.stdin.read()")


def _reader(path: Path, mode: str) -> subprocess.Popen[str]:
    """A Python process that maps `path` and, with mode 'map', makes every page of it resident."""
    child = subprocess.Popen([sys.executable, "-c", _READER, str(path), mode], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.skipif(os.geteuid() != 0, reason="page frame numbers in /proc/PID/pagemap need root")
def test_a_page_shared_by_two_processes_counts_half_in_each(tmp_path: Path) -> None:
    size = 32 * 2**20
    shared = tmp_path / "shared.bin"
    shared.write_bytes(b"\1" * size)
    with shared.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mine:
        sum(mine[i] for i in range(0, size, 4096))  # every page resident in this process
        assert process_usage(os.getpid()).rss >= size // 1024
        readers = [_reader(shared, "map"), _reader(shared, "skip")]  # the same interpreter, with and without
        try:
            alone = appliance_pss({"me": [os.getpid()]})["me"]["file"]
            with_mapper, with_other = (appliance_pss({"me": [os.getpid()], "other": [r.pid]})["me"]["file"]
                                       for r in readers)
        finally:
            for reader in readers:
                assert reader.stdin is not None
                reader.stdin.close()
                reader.wait(10)
    # Sharing the interpreter's own files costs both cases the same; the 32 MB file is split in two with its mapper.
    assert (alone - with_mapper) - (alone - with_other) == pytest.approx(16, abs=1)


def test_descendants_include_the_whole_tree() -> None:
    tree = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, "
                             "'-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE); print(p.pid, flush=True);"
                             " sys.stdin.read(); p.stdin.close(); p.wait()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert tree.stdout is not None
        grandchild = int(tree.stdout.readline())
        assert set(descendants(tree.pid)) == {tree.pid, grandchild}
        assert descendants(grandchild) == [grandchild]
    finally:
        assert tree.stdin is not None
        tree.stdin.close()
        tree.wait(10)
