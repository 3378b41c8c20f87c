"""Guess My City (after LMRL-Gym): find a hidden city with yes/no and a few open questions, answered by an oracle.

The cities are `data/cities.json`. Yes/no questions go to the rule oracle of `questioning` (or an LLM oracle);
five open questions are answered from the city's record, never with its name: its continent, country, main
languages, climate and population band. Reward as in Twenty Questions: `1 - 0.5 (q - 1) / max_turns` for a
correct guess with question q, else 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from agentgym.envs.games.questioning import (
    ONE_AT_A_TIME, Entry, Feature, KnowledgeBase, QuestioningEnv, Reply, compile_patterns, normalise, phrase_patterns,
    read_data, slug,
)

TROPIC_LATITUDE = 23.44
POPULATION_BANDS = ("under 1 million", "1 to 5 million", "5 to 10 million", "over 10 million")
POPULATION_PHRASES = ("fewer than 1 million", "between 1 and 5 million", "between 5 and 10 million", "more than 10 million")
# Thresholds at the band edges, the only ones the bands answer truthfully: (millions, words for the number).
THRESHOLDS = ((1, "1|one|a"), (5, "5|five"), (10, "10|ten"))
_MORE = "(?:more|over|greater|larger|bigger|above|at least|exceeds?|exceeding)(?: than)?"
_LESS = "(?:less|fewer|under|below|smaller)(?: than)?"
_LANGUAGE_CONTEXT = re.compile(r"\b(?:speak|speaks|spoken|speaking|language|languages|tongue)\b")
_CLIMATE_CONTEXT = re.compile(r"\b(?:climate|weather)\b")

REFUSAL = (
    "I can only answer yes/no questions about the city's continent, country, region, coast, capital status, hemisphere, "
    "population, climate, main languages, altitude and Olympic Games, and the open questions 'What continent is it on?', "
    "'What country is it in?', 'What language is spoken there?', 'What is its climate?' and 'How many people live there?'."
)

INSTRUCTIONS = (
    "You are playing Guess My City. I am thinking of a city somewhere in the world. Each turn, ask one question: a "
    "yes/no question such as 'Is it in Europe?', 'Is it on the coast?' or 'Is it the capital of its country?', or one "
    "of these open questions: 'What continent is it on?', 'What country is it in?', 'What language is spoken there?', "
    "'What is its climate?', 'How many people live there?'. When you think you know, guess by naming the city: "
    "'Is it Paris?' or 'My guess: Paris'. Any message that names a city counts as a guess; a wrong guess is answered "
    "No and uses a question. The fewer questions you use, the higher your reward. Reply with your question only."
)

# Open questions: a sentence that starts with a question word and names one of these kinds.
_OPEN_START = re.compile(r"^(?:(?:and|so|ok|okay|then|now) )?(?:what|whats|which|where|wheres|how|hows)\b")
_OPEN_KINDS = {
    "continent": re.compile(r"\bcontinents?\b"),
    "country": re.compile(r"\b(?:country|countries|nation)\b"),
    "languages": re.compile(r"\b(?:languages?|speak|spoken)\b"),
    "climate": re.compile(r"\b(?:climate|weather)\b"),
    "population": re.compile(r"\b(?:population|populous|how many (?:people|inhabitants|residents)|how (?:big|large))\b"),
}


def _population_features() -> list[Feature]:
    """'More than N million' for N at the band edges; 'fewer than N million' asks the opposite."""
    features = []
    for millions, words in THRESHOLDS:
        positive = [f"{_MORE} (?:{words}) million"] + (["megacity", "megacities"] if millions == 10 else [])
        features.append(Feature(
            f"population>{millions}", f"Does its metropolitan area have more than {millions} million people?",
            compile_patterns(positive), compile_patterns([f"{_LESS} (?:{words}) million"]), priority=1,
        ))
    return features


def _features(data: dict[str, Any]) -> list[Feature]:
    """Every feature of the city game: places, languages, climates, population and the boolean facts."""
    features = [
        Feature(f"continent:{name}", f"Is it in {name}?", phrase_patterns(words), priority=1)
        for name, words in data["continents"].items()
    ]
    for name, spec in data["countries"].items():
        question = f"Is it in {spec['display']}?"
        features.append(Feature(f"country:{name}", question, phrase_patterns([name, *spec["aliases"]]), priority=1))
        if spec["adjectives"]:  # "a French city": below a language's "French" when speaking is mentioned
            features.append(Feature(f"country:{name}", question, phrase_patterns(spec["adjectives"])))
    features += [
        Feature(f"region:{name}", f"Is it in {name}?", phrase_patterns(spec["patterns"]), priority=1)
        for name, spec in data["regions"].items()
    ]
    features += [
        Feature(f"language:{name}", f"Is {name} one of the main languages spoken there?", phrase_patterns(words),
                context=_LANGUAGE_CONTEXT, priority=2)
        for name, words in data["languages"].items()
    ]
    features += [
        Feature(f"climate:{name}", f"Does it have {_article(name)} {name} climate?", compile_patterns(spec["patterns"]),
                context=_CLIMATE_CONTEXT if spec["needs_context"] else None, priority=2 if spec["needs_context"] else 1)
        for name, spec in data["climates"].items()
    ]
    features += _population_features()
    features += [
        Feature(key, spec["question"], compile_patterns(spec["patterns"]), compile_patterns(spec["negative"]))
        for key, spec in data["features"].items()
    ]
    features += [
        Feature(f"unsupported:{i}", "", compile_patterns(spec["patterns"]), refusal=spec["reply"])
        for i, spec in enumerate(data["unsupported"])
    ]
    return features


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _truths(city: dict[str, Any], regions: dict[str, Any]) -> frozenset[str]:
    """The keys of the features true of one city record."""
    band = POPULATION_BANDS.index(city["population"])
    summer, winter = city["hosted_summer_olympics"], city["hosted_winter_olympics"]
    facts = {
        "coastal": city["coastal"], "is_capital": city["is_capital"], "southern_hemisphere": city["hemisphere"] == "southern",
        "in_tropics": abs(city["latitude"]) < TROPIC_LATITUDE, "hosted_summer_olympics": summer,
        "hosted_winter_olympics": winter, "hosted_olympics": summer or winter, "above_1000_m": city["above_1000_m"],
    }
    keys = {f"continent:{city['continent']}", f"country:{city['country']}", f"climate:{city['climate']}"}
    keys |= {f"language:{lang}" for lang in city["languages"]}
    keys |= {f"population>{m}" for i, (m, _) in enumerate(THRESHOLDS) if band > i}
    keys |= {f"region:{name}" for name, spec in regions.items() if city["country"] in spec["countries"]}
    return frozenset(keys | {k for k, v in facts.items() if v})


@lru_cache(maxsize=1)
def city_knowledge_base() -> KnowledgeBase:
    """The Guess My City knowledge base, built once from data/cities.json."""
    data = read_data("cities.json")
    entries = [
        Entry(
            f"city-{slug(c['name'])}-{slug(c['country'])}", c["name"],
            tuple(dict.fromkeys(normalise(n) for n in [c["name"], *c["aliases"]])),
            _truths(c, data["regions"]),
            {**c, "country_display": data["countries"][c["country"]]["display"]},
        )
        for c in data["cities"]
    ]
    return KnowledgeBase(entries, _features(data), refusal=REFUSAL)


def _languages_text(languages: Sequence[str]) -> str:
    if len(languages) == 1:
        return f"The main language spoken there is {languages[0]}."
    return f"The main languages spoken there are {', '.join(languages[:-1])} and {languages[-1]}."


def open_reply(kind: str, city: Entry) -> Reply:
    """The answer to open question `kind` about `city`, from its record; it never contains the city's name."""
    fields = city.fields
    texts: dict[str, Callable[[], str]] = {
        "continent": lambda: f"It is in {fields['continent']}.",
        "country": lambda: f"It is in {fields['country_display']}.",
        "languages": lambda: _languages_text(fields["languages"]),
        "climate": lambda: f"It has {_article(fields['climate'])} {fields['climate']} climate.",
        "population": lambda: f"Its metropolitan area has {POPULATION_PHRASES[POPULATION_BANDS.index(fields['population'])]} people.",
    }
    value = fields[kind]
    return Reply(texts[kind](), True, lambda e: e.fields[kind] == value)


def open_kinds(text: str) -> set[str]:
    """The open-question kinds asked by the sentences of raw `text` that start with a question word."""
    kinds: set[str] = set()
    for sentence in re.split(r"[.?!;\n]+", text):
        norm = normalise(sentence)
        if _OPEN_START.match(norm):
            kinds |= {kind for kind, rx in _OPEN_KINDS.items() if rx.search(norm)}
    return kinds


class GuessMyCityEnv(QuestioningEnv):
    """Guess My City on 216 cities (task ids `city-<city>-<country>`); free-text actions, rule or LLM oracle.

    Options as for TwentyQuestionsEnv: `max_turns` (20), `split`, `recap`, and `oracle_base_url` + `oracle_model`
    for an LLM oracle (it answers the yes/no questions; open questions and guesses are always answered by rule).
    """

    game = "Guess My City"

    def knowledge_base(self) -> KnowledgeBase:
        """The shared city knowledge base."""
        return city_knowledge_base()

    def instructions(self) -> str:
        """How to ask and how to guess."""
        return INSTRUCTIONS

    def introduction(self) -> str:
        """The rules in brief."""
        return (
            "I am thinking of a city. Ask me yes/no questions, or what continent, country, language, climate or "
            "population it has, one question per turn, then name the city to guess."
        )

    def open_answer(self, entry: Entry, text: str) -> Reply | None:
        """Answer 'What continent / country / language / climate / population?'; None for other questions."""
        kinds = open_kinds(text)
        if not kinds:
            return None
        if len(kinds) > 1:
            return Reply(ONE_AT_A_TIME, False)
        return open_reply(kinds.pop(), entry)

    def secret(self, entry: Entry) -> str:
        """The city and its country, for the LLM oracle."""
        return f"{entry.name}, {entry.fields['country_display']}"
