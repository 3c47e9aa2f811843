"""Numbers and times in a text, normalized so an answer's "9 pm" can be found in a section's "21:00".

A grounded answer may only state the numbers its sections (or the question) state: an invented opening hour
or price is the failure a kiosk must never show.
"""

from __future__ import annotations

import re

from daemon.knowledge.terms import normalize

_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}
_EN_NUMBERS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}
_ZH_NUMBER = r"[零〇一二两三四五六七八九十百]+"
_CLOCK = re.compile(r"(?<![\d.])(\d{1,2}):(\d{2})(?!\d)\s*(am|pm|a\.m\.|p\.m\.)?")
_HOUR_AMPM = re.compile(r"(?<![\d:.])(\d{1,2})\s*(am|pm|a\.m\.|p\.m\.)")
_ZH_TIME = re.compile(rf"(上午|早上|中午|下午|晚上)?(\d{{1,2}}|{_ZH_NUMBER})[点點时](半|(\d{{1,2}}|{_ZH_NUMBER})分?)?")
# A Chinese numeral states a number only before a measure word ("三楼", "五分钟", "两本"), not in a weekday
# ("周五") or a word ("十分方便", "一些").
_ZH_COUNTED = re.compile(
    rf"(?<![周期拜零〇一二两三四五六七八九十百])({_ZH_NUMBER})(?=[楼层元块本次天个岁号月年张页人位台间周毛角]|小时|分钟)")
_NUMBER = re.compile(r"(?<![\d.])\d+(?:[.,]\d+)?(?![\d])")
_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s", re.MULTILINE)
_WORD = re.compile(r"[a-z]+")


def zh_number(text: str) -> int | None:
    """一 .. 九十九 as an integer (enough for hours, minutes, floors and small prices)."""
    if text.isdigit():
        return int(text)
    if "百" in text:
        return None
    if "十" in text:
        tens, _, ones = text.partition("十")
        t = _ZH_DIGITS.get(tens, -1) if tens else 1
        o = _ZH_DIGITS.get(ones, -1) if ones else 0
        return t * 10 + o if t >= 0 and o >= 0 else None
    digits = [_ZH_DIGITS.get(c) for c in text]
    return int("".join(str(d) for d in digits)) if digits and None not in digits else None


def _times(hour: int, minute: int, marker: str | None) -> set[str]:
    """The clock times a written time may mean: "9:00" without am/pm may be either 09:00 or 21:00."""
    if not (0 <= hour <= 24 and 0 <= minute < 60):
        return set()
    if marker in ("pm", "p.m.", "下午", "晚上") and hour < 12:
        hours = {hour + 12}
    elif marker in ("am", "a.m.", "上午", "早上") and hour == 12:
        hours = {0}
    elif marker is None and 1 <= hour <= 12:
        hours = {hour, (hour + 12) % 24}
    else:
        hours = {hour}
    return {f"t{h:02d}{minute:02d}" for h in hours}


def facts(text: str) -> list[set[str]]:
    """Each number or time stated in the text, as the set of normalized forms it may stand for."""
    text = _LIST_MARKER.sub(" ", normalize(text))
    found: list[set[str]] = []
    for pattern in (_CLOCK, _HOUR_AMPM):
        for m in pattern.finditer(text):
            found.append(_times(int(m.group(1)), int(m.group(2)) if pattern is _CLOCK else 0, m.groups()[-1]))
        text = pattern.sub(" ", text)
    for m in _ZH_TIME.finditer(text):
        hour = zh_number(m.group(2))
        minute = 30 if m.group(3) == "半" else (zh_number(m.group(4)) if m.group(4) else 0)
        if hour is not None and minute is not None:
            found.append(_times(hour, minute, m.group(1)))
    text = _ZH_TIME.sub(" ", text)
    for m in _NUMBER.finditer(text):
        found.append({_plain(m.group(0))})
    for m in _ZH_COUNTED.finditer(text):
        if (value := zh_number(m.group(1))) is not None:
            found.append({str(value)})
    return [f for f in found if f]


def _plain(number: str) -> str:
    number = number.replace(",", ".") if number.count(",") == 1 and len(number.split(",")[1]) != 3 else \
        number.replace(",", "")
    value = float(number)
    return str(int(value)) if value.is_integer() else str(value)


def stated(text: str) -> set[str]:
    """Everything a source text states: its numbers and times, and the numbers it spells out in words."""
    out: set[str] = set()
    for forms in facts(text):
        out |= forms
        out |= {str(int(f[1:3])) for f in forms if f.startswith("t")}  # "9:00" also states the number 9
    out |= {str(_EN_NUMBERS[w]) for w in _WORD.findall(normalize(text)) if w in _EN_NUMBERS}
    return out


def unsupported(answer: str, sources: str) -> list[str]:
    """The numbers and times of `answer` that `sources` never states (a time matches in any of its readings)."""
    known = stated(sources)
    bad = []
    for forms in facts(answer):
        if not forms & known and not _plain_hour(forms) & known:
            first = sorted(forms)[0]
            bad.append(f"{first[1:3]}:{first[3:]}" if first.startswith("t") else first)
    return bad


def _plain_hour(forms: set[str]) -> set[str]:
    # "open until 9" in an answer is a time the model wrote without minutes; match it against "21:00".
    return {f"t{int(f):02d}00" for f in forms if f.isdigit() and 1 <= int(f) <= 24} | \
        {f"t{(int(f) + 12) % 24:02d}00" for f in forms if f.isdigit() and 1 <= int(f) <= 12}
