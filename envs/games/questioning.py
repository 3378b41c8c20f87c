"""What Twenty Questions and Guess My City share: a knowledge base, the oracles, the guess detector, the walkthrough.

A knowledge base is a list of entries (objects, cities) and a list of features: yes/no properties such as
`can_fly` or `country:France`, each true for some entries. Everything is read from JSON in `data/`.

The rule-based oracle matches a question to one feature:

1. The question is normalised (`normalise`): lower case, accents dropped, punctuation turned into spaces.
2. Every feature has patterns (regular expressions on the normalised text, matched on word boundaries) that ask
   for it, and optionally negative patterns that ask for its opposite ("smaller than a breadbox"). Some features
   only count when a context word is present too (a language needs "speak", "spoken" or "language").
3. A hit inside a longer hit of another feature is dropped ("eat meat" beats "meat", "south america" beats
   "america"); on the same span the feature with the higher priority wins (a language over a country adjective).
4. One feature left: the answer is "Yes." or "No." from the hidden entry. None: a fixed reply that says what
   can be asked. Several: "one thing at a time". Both count as invalid actions (`valid_action` False).
5. Questions with "not" or "n't" are refused: the oracle answers only positive questions, so "Isn't it red?"
   never has two readings.

Before the oracle, the guess detector looks for entry names (and aliases, with a plural s): a message that names
exactly one entry is a guess, whatever else it says. An optional LLM oracle (any OpenAI-compatible server)
replaces the rule oracle for yes/no questions; guesses are always detected by the rules.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.errors import AgentGymError, EnvConfigError

DATA_DIR = Path(__file__).with_name("data")
# A question is a sentence; the cap bounds the matcher's work on a runaway reply.
MAX_QUESTION_CHARS = 1000
RECAP_QUESTION_CHARS = 120

ONE_AT_A_TIME = "Please ask about one thing at a time."
ONE_GUESS = "Please name one guess at a time."
NO_NEGATION = "Please ask a positive question, without 'not' or \"n't\"."
EMPTY = "Please ask a yes/no question, or name your guess."
_NEGATION = re.compile(
    r"\b(?:not|never|isnt|arent|wasnt|werent|dont|doesnt|didnt|cant|cannot|couldnt|wouldnt|shouldnt|hasnt|havent|wont)\b"
)


class OracleUnavailableError(AgentGymError):
    """The LLM oracle's server failed or could not be reached."""

    def __init__(self, base_url: str, reason: str) -> None:
        self.base_url = base_url
        super().__init__(
            f"the LLM oracle at {base_url} failed ({reason}); start an OpenAI-compatible server there, "
            "fix oracle_base_url/oracle_model, or leave them unset to use the rule-based oracle"
        )


# -- text ------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower-case ASCII words separated by single spaces: the form every pattern is written against."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = text.replace("'", "").replace("&", " and ")  # "isn't" -> "isnt", "xi'an" -> "xian"
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # "1,000" -> "1000"
    text = re.sub(r"[^a-z0-9.]+", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep only decimal points
    text = re.sub(r"\bbread box\b", "breadbox", " ".join(text.split()))
    return text


def slug(text: str) -> str:
    """A task-id fragment: the normalised text with hyphens for spaces and dots."""
    return normalise(text).replace(".", "-").replace(" ", "-")


def compile_patterns(fragments: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Each regex fragment anchored on word boundaries."""
    return tuple(re.compile(rf"\b(?:{f})\b") for f in fragments)


def phrase_patterns(phrases: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Literal phrases (normalised first) as word-bounded patterns."""
    return compile_patterns(re.escape(normalise(p)) for p in phrases if normalise(p))


def split_of(task_id: str) -> str:
    """'test' for a deterministic fifth of the task ids (by SHA-256), 'train' for the rest."""
    return "test" if int(hashlib.sha256(task_id.encode()).hexdigest(), 16) % 5 == 0 else "train"


@lru_cache(maxsize=None)
def read_data(filename: str) -> Any:
    """The parsed JSON file `data/<filename>`, read once."""
    path = DATA_DIR / filename
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnvConfigError(f"cannot read the knowledge base {path}: {exc}; reinstall agentgym") from exc


# -- knowledge base --------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """A yes/no property the rule oracle understands, with the canonical question the walkthrough asks.

    A feature with a `refusal` is no property: matching it answers that text and marks the step invalid
    (questions the knowledge base cannot answer truthfully, like "more than 3 million people").
    """

    key: str
    question: str
    patterns: tuple[re.Pattern[str], ...]
    negative: tuple[re.Pattern[str], ...] = ()
    context: re.Pattern[str] | None = None
    priority: int = 0
    refusal: str | None = None


@dataclass(frozen=True, eq=False)
class Entry:
    """One thing the oracle can think of: its task id, names (normalised) and the keys of its true features."""

    id: str
    name: str
    names: tuple[str, ...]
    truths: frozenset[str]
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """What the matcher made of a question: `kind` is 'feature', 'none', 'several' or 'refused'."""

    kind: str
    feature: Feature | None = None
    polarity: bool = True


@dataclass(frozen=True)
class _Hit:
    feature: Feature
    polarity: bool
    start: int
    end: int

    def dominates(self, other: _Hit) -> bool:
        """True when this hit covers `other` and is longer, or is as long with a higher priority."""
        if (self.feature.key, self.polarity) == (other.feature.key, other.polarity):
            return False
        if not (self.start <= other.start and other.end <= self.end):
            return False
        longer = (self.end - self.start) > (other.end - other.start)
        return longer or self.feature.priority > other.feature.priority


class KnowledgeBase:
    """Entries and the features that describe them, indexed for the matcher, guess detector and walkthrough."""

    def __init__(self, entries: Sequence[Entry], features: Sequence[Feature], *, refusal: str) -> None:
        self.entries = tuple(entries)
        self.by_id = {e.id: e for e in self.entries}
        if len(self.by_id) != len(self.entries):
            raise EnvConfigError("the knowledge base has two entries with the same id")
        self.features = tuple(features)
        self.askable = tuple(f for f in self.features if f.refusal is None)
        self.refusal = refusal
        self._holders = {f.key: frozenset(e.id for e in self.entries if f.key in e.truths) for f in self.askable}
        # Longest names first so that the regex prefers "sea lion" to "lion" inside one entry's alternation.
        self._names = [
            (e, re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(e.names, key=len, reverse=True)) + r")(?:s|es)?\b"))
            for e in self.entries
        ]

    def holders(self, key: str) -> frozenset[str]:
        """The ids of the entries for which feature `key` is true."""
        return self._holders[key]

    def named(self, text: str) -> list[Entry]:
        """The entries that normalised `text` names, dropping names inside longer names ("teddy bear" over "bear")."""
        hits = [(e, m.start(), m.end()) for e, rx in self._names for m in rx.finditer(text)]
        kept = {
            e.id: e for e, s, t in hits
            if not any(o is not e and os <= s and t <= ot and (ot - os) > (t - s) for o, os, ot in hits)
        }
        return list(kept.values())

    def match(self, text: str) -> Match:
        """The one feature (and polarity) that normalised `text` asks about, or why there is none."""
        hits = [
            _Hit(f, polarity, m.start(), m.end())
            for f in self.features
            if f.context is None or f.context.search(text)
            for polarity, patterns in ((True, f.patterns), (False, f.negative))
            for p in patterns
            for m in p.finditer(text)
        ]
        kept = {(h.feature.key, h.polarity): h for h in hits if not any(o.dominates(h) for o in hits)}
        if not kept:
            return Match("none")
        if len(kept) > 1:
            return Match("several")
        hit = next(iter(kept.values()))
        return Match("refused" if hit.feature.refusal else "feature", hit.feature, hit.polarity)


# -- oracles ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """The oracle's answer: its text, whether the question was usable, and which candidates it leaves."""

    text: str
    valid: bool
    keep: Callable[[Entry], bool] | None = None


def feature_keep(feature: Feature, truth: bool) -> Callable[[Entry], bool]:
    """The candidates for which `feature` is `truth`."""
    return lambda e: (feature.key in e.truths) == truth


def rule_answer(kb: KnowledgeBase, entry: Entry, text: str) -> Reply:
    """Answer normalised `text` about `entry` from the knowledge base (see the module docstring)."""
    if _NEGATION.search(text):
        return Reply(NO_NEGATION, False)
    found = kb.match(text)
    if found.kind == "none":
        return Reply(kb.refusal, False)
    if found.kind == "several":
        return Reply(ONE_AT_A_TIME, False)
    feature = found.feature
    assert feature is not None  # kinds 'feature' and 'refused' always carry one
    if feature.refusal:
        return Reply(feature.refusal, False)
    truth = feature.key in entry.truths
    return Reply("Yes." if truth == found.polarity else "No.", True, feature_keep(feature, truth))


class LLMOracle:
    """Answers yes/no questions with a model behind an OpenAI-compatible API, told the hidden answer."""

    def __init__(self, base_url: str, model: str, *, game: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        import openai  # imported here: registering and building rule-oracle envs must stay cheap

        self._openai = openai
        self.base_url, self.model, self.game = base_url, model, game
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=1)

    def messages(self, secret: str, question: str) -> list[dict[str, str]]:
        """The chat request: the rules and the hidden answer, then the player's question."""
        system = (
            f"You are the oracle in a game of {self.game}. The hidden answer is: {secret}. The player asks one question "
            "at a time. Answer it truthfully about the hidden answer with exactly one word: Yes or No. If it cannot be "
            "answered with yes or no, answer Unknown. Never say the hidden answer."
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    def ask(self, secret: str, question: str) -> str:
        """The model's raw reply; any failure of the server is an OracleUnavailableError naming it."""
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=self.messages(secret, question), temperature=0.0, max_tokens=4,  # type: ignore[arg-type]
            )
        except self._openai.APIStatusError as exc:
            raise OracleUnavailableError(self.base_url, f"HTTP {exc.status_code} for model {self.model!r}: {exc.message}") from exc
        except self._openai.APIError as exc:  # connection refused, timeouts, malformed responses
            cause = f": {exc.__cause__}" if exc.__cause__ else ""
            raise OracleUnavailableError(self.base_url, f"{type(exc).__name__}: {exc}{cause}") from exc
        if not response.choices:
            raise OracleUnavailableError(self.base_url, "the response had no choices")
        return response.choices[0].message.content or ""

    def answer(self, kb: KnowledgeBase, secret: str, text: str) -> Reply:
        """'Yes.' or 'No.' from the model; any other reply means the question was not a yes/no question."""
        word = (normalise(self.ask(secret, text[:MAX_QUESTION_CHARS])).split() or [""])[0]
        if word not in ("yes", "no"):
            return Reply(kb.refusal, False)
        said = word == "yes"
        # Candidates are narrowed only when the rules know which feature was asked (an information measure).
        found = kb.match(normalise(text))
        keep = feature_keep(found.feature, said == found.polarity) if found.kind == "feature" and found.feature else None
        return Reply("Yes." if said else "No.", True, keep)


# -- walkthrough and reward ------------------------------------------------------------


def best_split(kb: KnowledgeBase, candidates: frozenset[str]) -> Feature | None:
    """The askable feature that splits `candidates` closest to half (the first such in feature order)."""
    best, best_score = None, 0
    for feature in kb.askable:
        inside = len(candidates & kb.holders(feature.key))
        score = min(inside, len(candidates) - inside)
        if score > best_score:
            best, best_score = feature, score
    return best


def greedy_walkthrough(kb: KnowledgeBase, answer: Entry, guess: Callable[[Entry], str]) -> list[str]:
    """Ask the best-splitting question until one candidate is left (answered for `answer`), then guess it."""
    candidates = frozenset(kb.by_id)
    steps: list[str] = []
    while len(candidates) > 1:
        feature = best_split(kb, candidates)
        if feature is None:
            raise EnvConfigError(f"entries {sorted(candidates)} have the same features; the knowledge base must tell them apart")
        steps.append(feature.question)
        inside = kb.holders(feature.key)
        candidates = candidates & inside if feature.key in answer.truths else candidates - inside
    steps.append(guess(answer))
    return steps


def guess_reward(questions_used: int, max_questions: int) -> float:
    """Reward of a correct guess made with question number `questions_used`: 1 - 0.5 (questions_used - 1) / max_questions."""
    return 1.0 - 0.5 * (questions_used - 1) / max_questions


# -- the env ---------------------------------------------------------------------------


class QuestioningEnv(TextEnv):
    """A questioning game: the oracle thinks of an entry, the agent asks questions and names its guess.

    Actions are free text (`admissible_actions` is None). Every reply uses one of the `max_turns` questions,
    answered or not, so `questions_asked` equals the turn number. A correct guess ends the episode with
    success and reward `guess_reward`; a wrong one is answered "No." and the game goes on; running out of
    questions truncates the episode with reward 0. Each step's `signals`: `valid_action`, `questions_asked`,
    `candidates_left` (entries consistent with every answer so far) and `guessed`.
    """

    game: str = ""

    def __init__(
        self,
        max_turns: int = 20,
        split: str = "all",
        recap: bool = True,
        oracle_base_url: str | None = None,
        oracle_model: str | None = None,
        oracle_api_key: str | None = None,
        oracle_timeout_s: float = 30.0,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        if split not in ("all", "train", "test"):
            raise EnvConfigError(f"split must be 'all', 'train' or 'test', got {split!r}")
        if (oracle_base_url is None) != (oracle_model is None):
            raise EnvConfigError("the LLM oracle needs both oracle_base_url and oracle_model (or neither, for the rule oracle)")
        self.kb = self.knowledge_base()
        self.split = split
        self.recap = bool(recap)
        self._ids = [e.id for e in self.kb.entries if split == "all" or split_of(e.id) == split]
        self._llm = None
        if oracle_base_url is not None and oracle_model is not None:
            self._llm = LLMOracle(oracle_base_url, oracle_model, game=self.game, api_key=oracle_api_key, timeout_s=float(oracle_timeout_s))
        self._entry: Entry | None = None
        self._candidates: set[str] = set()
        self._history: list[tuple[str, str]] = []

    # -- what a game defines ---------------------------------------------------------

    @abstractmethod
    def knowledge_base(self) -> KnowledgeBase:
        """The game's knowledge base (cached: every env of a game shares one)."""

    @abstractmethod
    def instructions(self) -> str:
        """The system prompt: how to ask and how to guess."""

    @abstractmethod
    def introduction(self) -> str:
        """The first observation: the rules in brief."""

    def open_answer(self, entry: Entry, text: str) -> Reply | None:
        """An answer to an open (non yes/no) question, for games that allow some; None to go on to the oracle."""
        return None

    def secret(self, entry: Entry) -> str:
        """How the hidden entry is named to the LLM oracle."""
        return entry.name

    def guess_text(self, entry: Entry) -> str:
        """How the walkthrough phrases its guess."""
        return f"My guess: {entry.name}"

    # -- TextEnv ---------------------------------------------------------------------

    def task_ids(self) -> Sequence[str]:
        """One task per knowledge-base entry in the chosen split, in knowledge-base order."""
        return self._ids

    def start(self, task_id: str) -> EpisodeStart:
        """Think of entry `task_id`; the walkthrough is the greedy questioning path to it."""
        entry = self.kb.by_id[task_id]
        self._entry, self._candidates, self._history = entry, set(self.kb.by_id), []
        return EpisodeStart(
            observation=f"{self.introduction()} You have {self.max_turns} questions.",
            instructions=self.instructions(),
            admissible_actions=None,
            info={
                "walkthrough": greedy_walkthrough(self.kb, entry, self.guess_text),
                "answer": entry.name,
                "max_questions": self.max_turns,
            },
        )

    def act(self, action: str) -> StepOutcome:
        """Answer one question or guess, narrow the candidates, and end the game on a correct guess."""
        entry = self._entry
        assert entry is not None  # the base class calls start() before act()
        asked = self._turn
        reply, guessed, won = self._respond(entry, action[:MAX_QUESTION_CHARS])
        if reply.keep is not None:
            self._candidates = {i for i in self._candidates if reply.keep(self.kb.by_id[i])}
        self._history.append((" ".join(action.split())[:RECAP_QUESTION_CHARS], reply.text))
        text = reply.text
        if not won and asked >= self.max_turns:
            text += f" That was your last question. It was: {entry.name}."
        return StepOutcome(
            observation=self._with_recap(text),
            reward=guess_reward(asked, self.max_turns) if won else 0.0,
            terminated=won,
            success=True if won else None,
            signals={"valid_action": reply.valid, "questions_asked": asked,
                     "candidates_left": len(self._candidates), "guessed": guessed},
        )

    # -- helpers ---------------------------------------------------------------------

    def _respond(self, entry: Entry, action: str) -> tuple[Reply, bool, bool]:
        """(reply, whether it was a guess, whether the guess was right)."""
        text = normalise(action)
        if not text:
            return Reply(EMPTY, False), False, False
        named = self.kb.named(text)
        if len(named) > 1:
            return Reply(ONE_GUESS, False), False, False
        if named:
            guess = named[0]
            if guess is entry:
                return Reply(f"Yes! The answer is {entry.name}. You found it with {self._turn} questions.", True), True, True
            return Reply("No.", True, lambda e: e is not guess), True, False
        opened = self.open_answer(entry, action)
        if opened is not None:
            return opened, False, False
        if self._llm is not None:
            return self._llm.answer(self.kb, self.secret(entry), action), False, False
        return rule_answer(self.kb, entry, text), False, False

    def _with_recap(self, text: str) -> str:
        if not self.recap:
            return text
        lines = [f"{i}. {q} - {a}" for i, (q, a) in enumerate(self._history, 1)]
        return f"{text}\n\nQuestions so far ({len(self._history)} of {self.max_turns}):\n" + "\n".join(lines)
