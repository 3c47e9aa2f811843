"""The proposal side of speculative decoding (daemon.speculative): n-gram lookup and the draft length policy."""

from __future__ import annotations

from daemon.speculative import DraftLength, NgramIndex, RecentAnswers


def test_proposes_what_followed_the_longest_match() -> None:
    index = NgramIndex()
    # "7 8" was followed by 9 once, "6 7 8" by 1: the longer match wins.
    index.extend([7, 8, 9, 5, 6, 7, 8, 1, 2, 3, 4, 6, 7, 8])
    assert index.propose(3) == [1, 2, 3]


def test_the_most_recent_occurrence_wins_and_the_limit_holds() -> None:
    index = NgramIndex()
    index.extend([1, 2, 3, 10, 11, 1, 2, 3, 20, 21, 22, 1, 2, 3])
    assert index.propose(2) == [20, 21]
    assert index.propose(10) == [20, 21, 22, 1, 2, 3]


def test_no_match_or_a_single_token_proposes_nothing() -> None:
    index = NgramIndex()
    index.extend([1, 2, 3, 4, 5])
    assert index.propose(4) == []  # "4 5" never occurred before
    index.append(2)
    assert index.propose(4) == []  # one shared token ("5 2" is new) is not enough


def test_the_answer_extends_the_index_as_it_is_written() -> None:
    index = NgramIndex()
    index.extend([5, 6, 7, 8, 9])
    index.append(6)
    assert index.propose(4) == []
    index.append(7)  # the tail "6 7" occurred before
    assert index.propose(4) == [8, 9, 6, 7]


def test_reference_texts_are_proposed_from_but_never_run_into_each_other() -> None:
    index = NgramIndex([(1, 2, 3, 4), (9, 9, 9)])
    index.extend([0, 1, 2])
    assert index.propose(8) == [3, 4]  # stops at the end of its text
    spanning = NgramIndex([(1, 2), (3, 4)])
    spanning.extend([2, 3])  # "2 3" only exists across the boundary
    assert spanning.propose(4) == []


def test_recent_answers_keep_the_last_ones_only() -> None:
    recent = RecentAnswers(keep=2)
    for answer in ([1, 2], [3, 4], [5], [6, 7]):
        recent.add(answer)
    assert recent.texts() == [(3, 4), (6, 7)]  # a one-token answer is not worth keeping


def test_a_forgotten_conversations_answers_are_never_proposed_again() -> None:
    from daemon.context_cache import ContextCache

    cache = ContextCache(2)
    cache.answers.add([1, 2, 3], "visitor-a")
    cache.answers.add([4, 5, 6], "visitor-b")
    ContextCache.forget_everywhere(["visitor-a"])  # the visit ended (daemon.visits)
    assert cache.answers.texts() == [(4, 5, 6)]


def test_draft_length_grows_while_accepted_whole_and_falls_back_when_cut() -> None:
    length = DraftLength(longest=12)
    assert length.next() == 4
    length.record(4, 4)
    assert length.next() == 8
    length.record(8, 8)
    assert length.next() == 12  # never past the setting
    length.record(12, 3)
    assert length.next() == 4  # what was accepted, plus one
    length.record(4, 0)
    assert length.next() == 1
    length.record(0, 0)  # nothing proposed: nothing learnt
    assert length.next() == 1
    assert DraftLength(longest=2).next() == 2
