"""The knowledge folder: sections from headings, FAQ entries, keywords, and every problem named with its place;
`kioskd knowledge check` prints the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.knowledge.folder import MAX_SECTION_CHARS, KnowledgeError, read_folder
from tests.conftest import ROOT


def write(folder: Path, name: str, text: str | bytes) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def problems(folder: Path) -> list[str]:
    with pytest.raises(KnowledgeError) as caught:
        read_folder(folder)
    return caught.value.problems


def test_headings_make_sections_and_questions_make_faq_entries(tmp_path: Path) -> None:
    write(tmp_path, "library.md", "# Library\n\n## Opening hours\nDaily 9:00-21:00.\n\n"
                                  "## Can I eat here?\nKeywords: food, snacks\nOnly in the lobby.\n\n"
                                  "Setext heading\n--------------\nStill a section.\n\n"
                                  "```\n# not a heading\n```\n")
    write(tmp_path, "zh/常见问题.md", "# 可以带宠物吗？\n导盲犬除外，不可以。\n")
    write(tmp_path, "notes.txt", "not markdown")
    write(tmp_path, ".hidden.md", "# Secret\nnot indexed\n")
    folder = read_folder(tmp_path)
    by_title = {s.title: s for s in folder.sections}
    assert list(by_title) == ["Opening hours", "Can I eat here?", "Setext heading", "可以带宠物吗？"]
    assert by_title["Opening hours"].parents == ("Library",) and not by_title["Opening hours"].is_faq
    assert by_title["Can I eat here?"].is_faq and by_title["可以带宠物吗？"].is_faq  # ? and ？
    assert by_title["Can I eat here?"].keywords == ("food", "snacks")
    assert by_title["Can I eat here?"].body == "Only in the lobby."
    assert "# not a heading" in by_title["Setext heading"].body  # a code block is not a heading
    assert by_title["可以带宠物吗？"].file == "zh/常见问题.md" and by_title["可以带宠物吗？"].lang == "zh"
    assert folder.ignored == ["notes.txt"]


def test_every_problem_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# Hours\nDaily.\n\n# Empty\n\n# hours\nAgain.\n")
    write(tmp_path, "b.md", "intro without heading\n\n# Big\n" + "x" * (MAX_SECTION_CHARS + 1) + "\n")
    write(tmp_path, "c.md", b"# Caf\xe9\nlatin-1, not UTF-8\n")
    write(tmp_path, "d.md", "# Only keywords\nKeywords: a, b\n")
    found = problems(tmp_path)
    assert 'a.md:4: section "Empty" has no text' in found
    assert 'a.md:6: heading "hours" is also at a.md:1; each heading must be unique (it names the answer\'s ' \
           'source)' in found
    assert "b.md:1: text before the first heading belongs to no section; give it a heading" in found
    assert any(p.startswith(f'b.md:3: section "Big" has {MAX_SECTION_CHARS + 1} characters') for p in found)
    assert "c.md: not UTF-8 text (invalid byte at offset 5); save it as UTF-8" in found
    assert 'd.md:1: section "Only keywords" has only keywords, no text' in found
    assert len(found) == 6


def test_a_missing_or_empty_folder_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope") == [f"{tmp_path / 'nope'} does not exist"]
    assert problems(tmp_path)[0].startswith("no sections found")


def test_a_heading_that_only_groups_others_is_not_empty(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# Services\n## Printing\n¥1 a page.\n")
    assert [s.title for s in read_folder(tmp_path).sections] == ["Printing"]


def kioskd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)


def test_check_command_lists_what_it_indexed(tmp_path: Path) -> None:
    write(tmp_path, "en.md", "# Opening hours\nDaily 9:00-21:00.\n# Is there Wi-Fi?\nKeywords: internet\nYes.\n")
    write(tmp_path, "zh.md", "# 开放时间\n每天 9:00-21:00。\n")
    done = kioskd("knowledge", "check", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "line 1    section  en  Opening hours (17 chars)" in done.stdout
    assert "FAQ      en  Is there Wi-Fi? (4 chars)  [keywords: internet]" in done.stdout
    assert "section  zh  开放时间" in done.stdout
    assert "ok: 3 sections (1 FAQ) in 2 files" in done.stdout


def test_check_command_fails_with_the_daemons_messages(tmp_path: Path) -> None:
    write(tmp_path, "a.md", "# Hours\n")
    done = kioskd("knowledge", "check", str(tmp_path))
    assert done.returncode == 1
    assert f"the knowledge folder {tmp_path} has 1 problem(s)" in done.stderr
    assert 'a.md:1: section "Hours" has no text' in done.stderr


def test_doctor_checks_the_knowledge_folder(tmp_path: Path) -> None:
    from daemon.doctor import check_knowledge
    from daemon.settings import load_settings

    def verdict(folder: Path | None) -> tuple[str, str]:
        check = check_knowledge(load_settings({"knowledge": folder and str(folder)}, environ={}))
        return check.status.value, check.message

    assert verdict(None)[0] == "OK"
    write(tmp_path, "a.md", "# Hours\nDaily.\n# Wi-Fi?\nYes.\n")
    assert verdict(tmp_path) == ("OK", f"{tmp_path}: 2 sections (1 FAQ) in 1 files")
    write(tmp_path, "b.md", "# Empty\n# Also empty\n")
    status, message = verdict(tmp_path)
    assert status == "FAIL" and 'b.md:1: section "Empty" has no text' in message and "1 more" in message
