"""Resolution rules on hand-made mentions: no model, no services, so each rule is pinned exactly."""

from __future__ import annotations

from ragstream.nlp.recognise import Mention
from ragstream.nlp.resolve import Resolver


def mentions(text: str, *spans: tuple[str, str]) -> list[Mention]:
    """Mentions of (surface, class), given in the order they occur in ``text``."""
    out, cursor = [], 0
    for surface, cls in spans:
        start = text.index(surface, cursor)
        cursor = start + len(surface)
        out.append(Mention(surface, cls, start, cursor, "", text))
    return out


def groups(text: str, *spans: tuple[str, str]) -> list[list[str]]:
    """The surfaces of each entity the document resolves to."""
    (linked,) = Resolver().resolve([mentions(text, *spans)])
    return sorted(sorted(text[s:t] for s, t in e.spans) for e in linked)


def test_short_forms_fold_into_the_one_long_name_they_fit():
    text = ("Asher Edelman bid for Dominion Textile Inc. Edelman said Dominion would reply. "
            "Texaco Inc and Texacos lawyers met Moodys Investors Service Inc; Moodys Investors "
            "and Moodys agreed.")
    assert groups(text, ("Asher Edelman", "PER"), ("Dominion Textile Inc", "ORG"),
                  ("Edelman", "MISC"), ("Dominion", "ORG"), ("Texaco Inc", "ORG"),
                  ("Texacos", "MISC"), ("Moodys Investors Service Inc", "ORG"),
                  ("Moodys Investors", "ORG"), ("Moodys", "ORG")) == sorted(sorted(g) for g in [
        ["Asher Edelman", "Edelman"], ["Dominion Textile Inc", "Dominion"],
        ["Texaco Inc", "Texacos"],
        ["Moodys Investors Service Inc", "Moodys Investors", "Moodys"]])


def test_the_same_name_tagged_with_another_class_joins_it_after_it_was_written():
    text = "Paxar Corp said on Monday that Paxar would buy it."
    assert groups(text, ("Paxar Corp", "ORG"), ("Paxar", "PER")) == [["Paxar", "Paxar Corp"]]
    before = "Paxar said on Monday that Paxar Corp would buy it."
    assert len(groups(before, ("Paxar", "PER"), ("Paxar Corp", "ORG"))) == 2


def test_places_never_fold_into_organisations_and_nationalities_stay_apart():
    text = "Georgia Power said Georgia would grow. American Express hired American bankers."
    assert len(groups(text, ("Georgia Power", "ORG"), ("Georgia", "LOC"),
                      ("American Express", "ORG"), ("American", "MISC"))) == 4


def test_ambiguous_short_forms_stay_apart():
    text = "Steve Jobs and Steve Ballmer met. Steve left."
    assert groups(text, ("Steve Jobs", "PER"), ("Steve Ballmer", "PER"), ("Steve", "PER")) == [
        ["Steve"], ["Steve Ballmer"], ["Steve Jobs"]]


def test_misspellings_fold_but_different_names_one_letter_apart_in_meaning_do_not():
    text = "Western Digital Corp and Western Digtial Corp. South Carolina and North Carolina."
    assert groups(text, ("Western Digital Corp", "ORG"), ("Western Digtial Corp", "ORG"),
                  ("South Carolina", "LOC"), ("North Carolina", "LOC")) == sorted([
        ["Western Digital Corp", "Western Digtial Corp"], ["South Carolina"], ["North Carolina"]])


def test_place_abbreviations_take_the_full_names_key_in_every_document():
    linked = Resolver().resolve([mentions("Columbia, S.C., is in S.C.", ("S.C.", "LOC"),
                                          ("S.C.", "LOC")),
                                 mentions("South Carolina voted.", ("South Carolina", "LOC")),
                                 mentions("N.C. voted.", ("N.C.", "LOC"))])
    ids = [{e.id for e in doc} for doc in linked]
    assert ids[0] == ids[1] != ids[2]
