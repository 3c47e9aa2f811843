"""Words visitors use for the same thing, in English and Chinese, so "restroom" finds the "Toilets" section.

The built-in groups cover what venues are asked about most; a section's own `Keywords:` line adds more. A
question that holds one phrase of a group matches a section that holds any other (see daemon.knowledge.index).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from daemon.knowledge.terms import terms

# A section that gives the hours of "weekdays" or "周一至周五" answers a question about Wednesday.
_WEEKDAYS = ("weekday", "weekdays", "working day", "monday to friday", "工作日", "周一至周五", "周一到周五",
             "星期一至星期五", "星期一到星期五")
_WEEKEND = ("weekend", "weekends", "周末", "双休日")

_HAN_CHARS = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

GROUPS: tuple[tuple[str, ...], ...] = (
    ("toilet", "restroom", "bathroom", "washroom", "lavatory", "wc", "loo", "厕所", "洗手间", "卫生间", "盥洗室"),
    ("open", "opening hours", "hours", "opening time", "开门", "开放", "营业", "开馆", "开放时间", "营业时间"),
    ("time", "hour", "hours", "几点", "时间", "点钟"),
    ("close", "closing", "closed", "关门", "闭馆", "打烊", "关闭", "休息"),
    ("price", "cost", "fee", "charge", "how much", "价格", "费用", "收费", "多少钱", "价钱"),
    ("free", "no charge", "免费"),
    ("wifi", "wireless", "internet", "network", "password", "无线", "网络", "上网", "密码", "无线网"),
    *(day + _WEEKDAYS for day in (
        ("monday", "mon", "周一", "星期一", "礼拜一"),
        ("tuesday", "tue", "周二", "星期二", "礼拜二"),
        ("wednesday", "wed", "周三", "星期三", "礼拜三"),
        ("thursday", "thu", "周四", "星期四", "礼拜四"),
        ("friday", "fri", "周五", "星期五", "礼拜五"))),
    ("saturday", "sat", "周六", "星期六", "礼拜六", *_WEEKEND),
    ("sunday", "sun", "周日", "星期日", "星期天", "礼拜天", "礼拜日", *_WEEKEND),
    _WEEKEND,
    ("holiday", "public holiday", "节假日", "假日", "节日"),
    ("parking", "car park", "park my car", "停车", "停车场", "车位"),
    ("cafe", "coffee", "café", "咖啡", "咖啡厅", "咖啡馆"),
    ("food", "eat", "drink", "snack", "吃", "饮食", "食物", "饮料", "喝"),
    ("child", "kid", "kids", "children", "儿童", "孩子", "小孩", "少儿", "小朋友", "宝宝"),
    ("member", "membership", "card", "sign up", "register", "join", "会员", "办卡", "读者证", "借书证", "注册"),
    ("borrow", "loan", "check out", "借", "借阅", "借书"),
    ("return", "give back", "归还", "还书"),
    ("late", "overdue", "fine", "逾期", "超期", "罚款", "滞纳金"),
    ("print", "printer", "printing", "打印", "打印机"),
    ("copy", "photocopy", "scan", "复印", "扫描"),
    ("lost", "found", "lost and found", "missing", "misplaced", "cannot find", "forgot", "left behind",
     "失物", "丢失", "遗失", "失物招领", "丢了", "弄丢", "找不到", "忘了", "落下"),
    ("wheelchair", "step-free", "barrier-free", "disabled", "elevator", "lift", "无障碍", "轮椅", "电梯"),
    ("room", "study room", "book a room", "meeting room", "自习室", "研讨室", "会议室", "房间", "预约"),
    ("phone", "telephone", "call", "contact", "email", "电话", "联系", "邮箱"),
    ("address", "where", "location", "地址", "位置", "在哪", "哪里"),
    ("floor", "level", "storey", "楼", "层"),
    ("event", "activity", "workshop", "talk", "活动", "讲座"),
    ("pet", "dog", "cat", "animal", "宠物", "狗", "猫"),
    ("locker", "storage", "bag", "寄存", "储物柜", "存包"),
    ("smoking", "smoke", "吸烟", "抽烟"),
    ("id", "identity card", "passport", "identification", "证件", "身份证", "护照", "材料"),
    ("staff", "desk", "front desk", "help", "服务台", "前台", "工作人员"),
)


@dataclass(frozen=True)
class Phrase:
    text: str
    terms: frozenset[str]


def phrase(text: str) -> Phrase:
    found = terms(text)
    if not found.pairs and len(_HAN_CHARS.findall(text)) > 1:
        # What is left of a longer Chinese phrase ("走" of 怎么走) would match any word with that character.
        return Phrase(text, frozenset(w for w in found.words if not _HAN_CHARS.match(w)))
    # A Chinese word is its bigrams (one for two characters); an English phrase its stems.
    return Phrase(text, frozenset(found.pairs or found.words))


class Synonyms:
    """Groups of phrases that mean the same; a phrase is present in a text when all its terms are."""

    def __init__(self, groups: Iterable[Iterable[str]] = GROUPS) -> None:
        self.groups = [tuple(p for p in (phrase(t) for t in group) if p.terms) for group in groups]

    def with_keywords(self, keywords: Iterable[tuple[str, ...]]) -> Synonyms:
        """These groups plus one group per section's keyword list (its title's words included)."""
        merged = Synonyms(())
        merged.groups = self.groups + [tuple(p for p in map(phrase, kw) if p.terms) for kw in keywords if kw]
        return merged

    def alternatives(self, present: frozenset[str]) -> list[tuple[frozenset[str], tuple[Phrase, ...]]]:
        """For each group with a phrase in `present`: the terms that phrase covers, and the group's phrases."""
        found = []
        for group in self.groups:
            for p in group:
                if p.terms <= present:
                    found.append((p.terms, group))
                    break
        return found
