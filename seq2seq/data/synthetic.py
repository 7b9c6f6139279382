"""The embedded toy translation task: a made-up language ("Lexish") into English.

It gives the package a corpus that needs no download, is identical for the same seed,
and has the structure that makes translation more than word lookup, so a model must
learn to reorder and to agree, yet a small attention GRU reaches BLEU near 100 on it
in a few minutes on a CPU. Each Lexish sentence has exactly one English translation.

Lexish (source)                              English (target)
- SOV: subject, [place], object, verb        SVO: subject, verb, object, [place]
- adjectives follow the noun, in mirror      adjectives precede the noun
  order: ``kato ruda granda``                ``big red cat``
- three genders: the article and every       no gender; ``a`` becomes ``an`` before
  adjective agree with the noun's gender     a vowel (``an old owl``)
  and number (``lo``/``la``/``le``, ``-o``/``-a``/``-e``, plural ``-s``)
- nouns take the plural suffix ``-ek``       plural ``-s`` or irregular (``mice``)
- the verb agrees in number (``-at``/``-an``) the verb agrees in the 3rd person singular
                                             (``sees``/``see``, ``carries``)
- negation: particle ``ne`` before the verb  ``does not see`` / ``do not see``
- postpositions after the place noun         prepositions before it
  (``lo parko ine``)                         (``in the park``)

Examples (Lexish → English)::

    la navo fela las ombroek pikas amat.
    → the happy boat likes the small umbrellas.
    las rekoek rudas grandas unas kuinaek post ne dorman.
    → the big red rivers do not sleep behind some kitchens.

The full stop is attached to the last word, as in detokenized text, so that BLEU
(sacrebleu's own tokenization) sees ordinary sentences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

MAX_WORDS = 12  # per sentence and side, not counting the full stop
MIN_WORDS = 3

Gender = Literal["m", "f", "n"]


@dataclass(frozen=True)
class Noun:
    """A noun: English singular and plural, Lexish stem, Lexish gender."""

    en: str
    en_plural: str
    stem: str
    gender: Gender


@dataclass(frozen=True)
class Verb:
    """A verb: English base and 3rd-person-singular forms, Lexish stem."""

    en: str
    en_3sg: str
    stem: str


def _noun(en: str, stem: str, gender: Gender, en_plural: str = "") -> Noun:
    return Noun(en=en, en_plural=en_plural or en + "s", stem=stem, gender=gender)


NOUNS: tuple[Noun, ...] = (
    _noun("dog", "hund", "m"), _noun("cat", "kato", "f"), _noun("bird", "piko", "n"),
    _noun("horse", "kaval", "m"), _noun("child", "tebo", "n", "children"), _noun("woman", "dana", "f", "women"),
    _noun("man", "viro", "m", "men"), _noun("teacher", "lerin", "f"), _noun("farmer", "agron", "m"),
    _noun("apple", "malo", "n"), _noun("ball", "pilka", "f"), _noun("book", "kniga", "f"),
    _noun("house", "domo", "n"), _noun("tree", "arbo", "m"), _noun("river", "reko", "f"),
    _noun("car", "auto", "n"), _noun("boat", "navo", "f"), _noun("mouse", "muso", "m", "mice"),
    _noun("owl", "ulo", "m"), _noun("egg", "ovo", "n"), _noun("elephant", "elefo", "m"),
    _noun("umbrella", "ombro", "f"), _noun("letter", "letra", "f"), _noun("fish", "fiso", "m", "fish"),
)
PLACES: tuple[Noun, ...] = (
    _noun("park", "parko", "m"), _noun("garden", "horto", "m"), _noun("kitchen", "kuina", "f"),
    _noun("forest", "silvo", "n"), _noun("city", "urbo", "f", "cities"), _noun("office", "ofico", "n"),
)
ADJECTIVES: dict[str, str] = {  # English -> Lexish stem
    "big": "grand", "small": "pik", "red": "rud", "green": "verd", "old": "vet", "young": "jun",
    "happy": "fel", "black": "nigr", "white": "blank", "angry": "ir", "quiet": "kal", "tall": "alt",
}
TRANSITIVE: tuple[Verb, ...] = (
    Verb("see", "sees", "vid"), Verb("chase", "chases", "cas"), Verb("like", "likes", "am"),
    Verb("find", "finds", "trov"), Verb("carry", "carries", "port"), Verb("watch", "watches", "observ"),
    Verb("follow", "follows", "sekv"), Verb("eat", "eats", "manj"),
)
INTRANSITIVE: tuple[Verb, ...] = (
    Verb("sleep", "sleeps", "dorm"), Verb("run", "runs", "kur"), Verb("sing", "sings", "kant"),
    Verb("wait", "waits", "atend"), Verb("play", "plays", "lud"),
)
PREPOSITIONS: dict[str, str] = {"in": "ine", "near": "apud", "under": "sub", "behind": "post"}  # -> postposition

DEFINITE = {"m": "lo", "f": "la", "n": "le"}
INDEFINITE = {"m": "un", "f": "una", "n": "une"}
ADJECTIVE_ENDING = {"m": "o", "f": "a", "n": "e"}
PLURAL_NOUN = "ek"
PLURAL_ADJECTIVE = "s"
VERB_SINGULAR, VERB_PLURAL = "at", "an"
NEGATION = "ne"


@dataclass(frozen=True)
class Phrase:
    """One noun phrase: the noun, definite or not, plural or not, its adjectives (English order)."""

    noun: Noun
    definite: bool
    plural: bool
    adjectives: tuple[str, ...]


def source_phrase(phrase: Phrase) -> list[str]:
    """Lexish: article agreeing in gender and number, noun (+ek), adjectives in mirror order, agreeing."""
    gender = phrase.noun.gender
    article = (DEFINITE if phrase.definite else INDEFINITE)[gender]
    adjective_suffix = ADJECTIVE_ENDING[gender]
    if phrase.plural:
        article += "s"
        adjective_suffix += PLURAL_ADJECTIVE
    noun = phrase.noun.stem + (PLURAL_NOUN if phrase.plural else "")
    adjectives = [ADJECTIVES[a] + adjective_suffix for a in reversed(phrase.adjectives)]
    return [article, noun, *adjectives]


def target_phrase(phrase: Phrase) -> list[str]:
    """English: the / a / an / some, adjectives, then the noun in its number."""
    words = [*phrase.adjectives, phrase.noun.en_plural if phrase.plural else phrase.noun.en]
    if phrase.definite:
        article = "the"
    elif phrase.plural:
        article = "some"
    else:
        article = "an" if words[0][0] in "aeiou" else "a"
    return [article, *words]


def _random_phrase(rng: random.Random, nouns: tuple[Noun, ...], num_adjectives: int) -> Phrase:
    return Phrase(noun=rng.choice(nouns), definite=rng.random() < 0.5, plural=rng.random() < 0.3,
                  adjectives=tuple(rng.sample(_ADJECTIVE_NAMES, num_adjectives)))


_ADJECTIVE_NAMES = tuple(ADJECTIVES)


def random_pair(rng: random.Random) -> tuple[str, str]:
    """One (Lexish, English) sentence pair, each of MIN_WORDS..MAX_WORDS words."""
    while True:
        src, tgt = _random_clause(rng)
        if MIN_WORDS <= len(src) <= MAX_WORDS and MIN_WORDS <= len(tgt) <= MAX_WORDS:
            return " ".join(src) + ".", " ".join(tgt) + "."


def _random_clause(rng: random.Random) -> tuple[list[str], list[str]]:
    transitive = rng.random() < 0.7
    verb = rng.choice(TRANSITIVE if transitive else INTRANSITIVE)
    num_adjectives = [rng.choice((0, 0, 1, 1, 2)) for _ in range(3)]
    subject = _random_phrase(rng, NOUNS, num_adjectives[0])
    obj = _random_phrase(rng, NOUNS, num_adjectives[1]) if transitive else None
    place = _random_phrase(rng, PLACES, num_adjectives[2] // 2) if rng.random() < 0.4 else None
    preposition = rng.choice(tuple(PREPOSITIONS)) if place else ""
    negated = rng.random() < 0.2

    src = source_phrase(subject)
    if place:
        src += [*source_phrase(place), PREPOSITIONS[preposition]]
    if obj:
        src += source_phrase(obj)
    src += ([NEGATION] if negated else []) + [verb.stem + (VERB_PLURAL if subject.plural else VERB_SINGULAR)]

    tgt = target_phrase(subject)
    if negated:
        tgt += ["do" if subject.plural else "does", "not", verb.en]
    else:
        tgt += [verb.en if subject.plural else verb.en_3sg]
    if obj:
        tgt += target_phrase(obj)
    if place:
        tgt += [preposition, *target_phrase(place)]
    return src, tgt


@lru_cache(maxsize=4)
def generate_corpus(train_size: int, dev_size: int, test_size: int,
                    seed: int) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """Train, dev and test as (src, tgt) tuples, from one generator seeded with ``seed``.

    Dev and test never repeat a source sentence of train (or of each other), so their
    BLEU measures generalisation; train may repeat short sentences, as real corpora do.
    """
    rng = random.Random(seed)
    train = [random_pair(rng) for _ in range(train_size)]
    seen = {src for src, _ in train}
    held_out = []
    for size in (dev_size, test_size):
        pairs: list[tuple[str, str]] = []
        while len(pairs) < size:
            pair = random_pair(rng)
            if pair[0] not in seen:
                seen.add(pair[0])
                pairs.append(pair)
        held_out.append(pairs)
    return tuple((tuple(s for s, _ in split), tuple(t for _, t in split)) for split in (train, *held_out))
