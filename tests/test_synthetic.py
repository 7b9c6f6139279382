"""The embedded synthetic task: deterministic by seed, and with the structure its docstring promises."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from seq2seq.config import DataConfig
from seq2seq.data.synthetic import (
    ADJECTIVE_ENDING, ADJECTIVES, DEFINITE, INDEFINITE, INTRANSITIVE, MAX_WORDS, MIN_WORDS, NEGATION, NOUNS,
    PLACES, PLURAL_ADJECTIVE, PLURAL_NOUN, PREPOSITIONS, TRANSITIVE, VERB_PLURAL, VERB_SINGULAR, generate_corpus,
)
from seq2seq.data.corpora import read_synthetic

ALL_NOUNS = NOUNS + PLACES
EN_NOUN = {n.en: (n, False) for n in ALL_NOUNS} | {n.en_plural: (n, True) for n in ALL_NOUNS if n.en_plural != n.en}
EN_NOUN |= {n.en: (n, None) for n in ALL_NOUNS if n.en_plural == n.en}  # "fish": number not visible
SRC_NOUN = {n.stem: (n, False) for n in ALL_NOUNS} | {n.stem + PLURAL_NOUN: (n, True) for n in ALL_NOUNS}
SRC_ADJECTIVE = {stem: en for en, stem in ADJECTIVES.items()}
SRC_ARTICLES = {a: (g, True) for g, a in DEFINITE.items()} | {a: (g, False) for g, a in INDEFINITE.items()}


@dataclass
class Phrase:
    noun: str
    plural: bool | None
    adjectives: list[str]  # English adjectives, in English order
    definite: bool


@pytest.fixture(scope="module")
def corpus() -> tuple:
    return generate_corpus(3000, 200, 200, 11)


def _pairs(corpus: tuple, split: int = 0) -> list[tuple[str, str]]:
    return list(zip(*corpus[split]))


def _words(sentence: str) -> list[str]:
    """The words of a sentence, without the full stop attached to the last one."""
    assert sentence.endswith(".") and not sentence.endswith(" ."), sentence
    return sentence[:-1].split()


def _english_phrases(words: list[str]) -> list[Phrase]:
    phrases = []
    for i, word in enumerate(words):
        if word not in ("the", "a", "an", "some"):
            continue
        j = i + 1
        while words[j] in ADJECTIVES:
            j += 1
        noun, plural = EN_NOUN[words[j]]
        if word == "some":
            plural = True
        if word in ("a", "an"):
            plural = False
            expected = "an" if words[i + 1][0] in "aeiou" else "a"
            assert word == expected, f"{word!r} before {words[i + 1]!r}"
        phrases.append(Phrase(noun.en, plural, words[i + 1:j], word == "the"))
    return phrases


def _source_phrases(words: list[str]) -> list[Phrase]:
    """Parse Lexish noun phrases, asserting that article and adjectives agree with the noun."""
    phrases = []
    for i, word in enumerate(words):
        base = word[:-1] if word.endswith("s") and word[:-1] in SRC_ARTICLES else word
        if base not in SRC_ARTICLES:
            continue
        gender, definite = SRC_ARTICLES[base]
        noun, plural = SRC_NOUN[words[i + 1]]
        assert noun.gender == gender, f"article {word!r} does not agree with {words[i + 1]!r}"
        assert plural == (word != base), f"article {word!r} does not agree in number with {words[i + 1]!r}"
        ending = ADJECTIVE_ENDING[gender] + (PLURAL_ADJECTIVE if plural else "")
        adjectives = []
        for form in words[i + 2:]:
            if not form.endswith(ending) or form[: -len(ending)] not in SRC_ADJECTIVE:
                break
            adjectives.append(SRC_ADJECTIVE[form[: -len(ending)]])
        following = words[i + 2 + len(adjectives)]  # must not be an adjective of another gender or number
        assert not any(following == stem + e for stem in SRC_ADJECTIVE for e in _all_endings()), words
        phrases.append(Phrase(noun.en, plural, adjectives[::-1], definite))  # mirror order -> English order
    return phrases


def _all_endings() -> list[str]:
    return [e + p for e in ADJECTIVE_ENDING.values() for p in ("", PLURAL_ADJECTIVE)]


def test_same_seed_gives_the_same_corpus_and_another_seed_a_different_one() -> None:
    first = generate_corpus.__wrapped__(500, 50, 50, 3)
    assert generate_corpus.__wrapped__(500, 50, 50, 3) == first
    assert generate_corpus.__wrapped__(500, 50, 50, 4) != first


def test_synthetic_split_follows_the_config() -> None:
    cfg = DataConfig(synthetic_train_size=120, synthetic_dev_size=30, synthetic_test_size=0, synthetic_seed=5)
    train = read_synthetic(cfg, "train")
    assert len(train) == 120 and len(read_synthetic(cfg, "dev")) == 30
    assert read_synthetic(cfg, "test") is None
    train.src.clear()  # callers get their own lists, never the cached ones
    assert len(read_synthetic(cfg, "train")) == 120


def test_sentence_lengths_are_within_bounds(corpus: tuple) -> None:
    for src, tgt in _pairs(corpus):
        assert MIN_WORDS <= len(_words(src)) <= MAX_WORDS
        assert MIN_WORDS <= len(_words(tgt)) <= MAX_WORDS


def test_held_out_sources_never_occur_in_train(corpus: tuple) -> None:
    train = set(corpus[0][0])
    assert not train & set(corpus[1][0])
    assert not train & set(corpus[2][0])
    assert not set(corpus[1][0]) & set(corpus[2][0])


def test_each_source_sentence_has_exactly_one_translation(corpus: tuple) -> None:
    translations: dict[str, str] = {}
    for src, tgt in _pairs(corpus):
        assert translations.setdefault(src, tgt) == tgt


def test_noun_phrases_agree_and_are_reordered(corpus: tuple) -> None:
    """Source: subject, [place], object; English: subject, object, [place]; adjectives mirrored."""
    for src, tgt in _pairs(corpus):
        src_phrases = _source_phrases(_words(src))
        tgt_phrases = _english_phrases(_words(tgt))
        assert len(src_phrases) == len(tgt_phrases)
        has_place = any(word in PREPOSITIONS for word in _words(tgt))
        if has_place and len(src_phrases) == 3:
            src_phrases = [src_phrases[0], src_phrases[2], src_phrases[1]]
        for source, english in zip(src_phrases, tgt_phrases):
            assert (source.noun, source.adjectives, source.definite) == (english.noun, english.adjectives,
                                                                         english.definite)
            if english.plural is not None:
                assert source.plural == english.plural


def test_verbs_come_last_in_the_source_and_agree_with_the_subject_in_english(corpus: tuple) -> None:
    verbs = {v.stem: v for v in TRANSITIVE + INTRANSITIVE}
    for src, tgt in _pairs(corpus):
        src_words, tgt_words = _words(src), _words(tgt)
        verb_form = src_words[-1]
        plural = verb_form.endswith(VERB_PLURAL)
        verb = verbs[verb_form[: -len(VERB_PLURAL if plural else VERB_SINGULAR)]]
        subject = _source_phrases(src_words)[0]
        assert subject.plural == plural  # the Lexish verb agrees with its subject
        after_subject = tgt_words[1 + len(subject.adjectives) + 1:]  # article, adjectives, noun
        if src_words[-2] == NEGATION:
            assert after_subject[:3] == ["do" if plural else "does", "not", verb.en]
        else:
            assert after_subject[0] == (verb.en if plural else verb.en_3sg)


def test_the_task_exercises_every_construction(corpus: tuple) -> None:
    text = " ".join(corpus[0][1])
    for needle in (" an ", " some ", " does not ", " do not ", " in the ", " children ", " carries "):
        assert needle in text, needle


@pytest.mark.benchmark  # a wall-clock bound: run with -m benchmark, on a quiet machine
def test_generation_is_fast() -> None:
    start = time.perf_counter()
    generate_corpus.__wrapped__(20000, 500, 500, 99)
    # About 0.2 s on one core; the bound leaves room for a busy shared machine.
    assert time.perf_counter() - start < 3.0
