"""Twenty Questions (after LMRL-Gym): find a hidden object with yes/no questions, answered by an oracle.

The objects and their attributes are `data/objects.json`; the rule-based oracle and the walkthrough are in
`questioning`. Reward: `1 - 0.5 (q - 1) / max_turns` for a correct guess made with question q, else 0, so
fewer questions score higher (1.0 for a first-question guess, 0.525 for the 20th of 20).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agentgym.envs.games.questioning import (
    Entry, Feature, KnowledgeBase, QuestioningEnv, compile_patterns, normalise, read_data, slug,
)
from agentgym.errors import EnvConfigError

REFUSAL = (
    "I can only answer yes/no questions about the object: what kind of thing it is, what it is made of, its size, "
    "where it is found and what it does. For example: 'Is it an animal?' or 'Is it made of metal?'"
)

INSTRUCTIONS = (
    "You are playing Twenty Questions. I am thinking of an object: an animal, a plant, a food or drink, or a thing. "
    "Each turn, ask one yes/no question about one property, such as 'Is it an animal?', 'Is it made of metal?' or "
    "'Is it bigger than a breadbox?', and I answer Yes or No. When you think you know, guess by naming it: "
    "'Is it a penguin?' or 'My guess: penguin'. Any message that names an object counts as a guess; a wrong guess "
    "is answered No and uses a question. The fewer questions you use, the higher your reward. "
    "Reply with your question only."
)


def _entry(obj: dict[str, Any], keys: frozenset[str]) -> Entry:
    """One object of the JSON as an entry; every object must give every attribute."""
    attributes = obj["attributes"]
    if set(attributes) != keys:
        raise EnvConfigError(f"object {obj['name']!r} in objects.json does not give exactly the attributes listed there")
    names = tuple(dict.fromkeys(normalise(n) for n in [obj["name"], *obj.get("aliases", [])]))
    return Entry(f"20q-{slug(obj['name'])}", obj["name"], names, frozenset(k for k, v in attributes.items() if v))


@lru_cache(maxsize=1)
def object_knowledge_base() -> KnowledgeBase:
    """The Twenty Questions knowledge base, built once from data/objects.json."""
    data = read_data("objects.json")
    features = [
        Feature(key, spec["question"], compile_patterns(spec["patterns"]), compile_patterns(spec.get("negative", [])))
        for key, spec in data["attributes"].items()
    ]
    features += [
        Feature(f"unsupported:{i}", "", compile_patterns(spec["patterns"]), refusal=spec["reply"])
        for i, spec in enumerate(data.get("unsupported", []))
    ]
    keys = frozenset(data["attributes"])
    return KnowledgeBase([_entry(o, keys) for o in data["objects"]], features, refusal=REFUSAL)


class TwentyQuestionsEnv(QuestioningEnv):
    """Twenty Questions on 240 objects (task ids `20q-<object>`); free-text actions, rule or LLM oracle.

    Options: `max_turns` (the question budget, 20), `split` ('all', 'train' or 'test': 80/20 by a hash of the
    id), `recap` (repeat every question and answer so far in each observation, for prompts that keep only the
    last few exchanges), `oracle_base_url` + `oracle_model` (+ `oracle_api_key`, `oracle_timeout_s`) to answer
    yes/no questions with a model on an OpenAI-compatible server instead of the rules.
    """

    game = "Twenty Questions"

    def knowledge_base(self) -> KnowledgeBase:
        """The shared object knowledge base."""
        return object_knowledge_base()

    def instructions(self) -> str:
        """How to ask and how to guess."""
        return INSTRUCTIONS

    def introduction(self) -> str:
        """The rules in brief."""
        return (
            "I am thinking of an object. Ask me yes/no questions to find out what it is, one per turn, "
            "then name it to guess. Naming an object counts as a guess."
        )
