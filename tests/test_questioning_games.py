"""Twenty Questions and Guess My City: gymnasium conformance, walkthroughs, the matcher, rewards, data, LLM oracle."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.envs.games.guess_my_city import POPULATION_BANDS, TROPIC_LATITUDE, city_knowledge_base, open_reply
from agentgym.envs.games.questioning import (
    NO_NEGATION, ONE_AT_A_TIME, ONE_GUESS, OracleUnavailableError, guess_reward, normalise, read_data, split_of,
)
from agentgym.envs.games.twenty_questions import object_knowledge_base
from agentgym.errors import EnvConfigError
from tests.fake_openai_server import FakeOpenAIServer

GAMES = ["twenty-questions", "guess-my-city"]


def _play(env, actions):
    """Step through `actions`; the (observation, reward, terminated, truncated, info) of each step."""
    return [env.step(a) for a in actions]


@pytest.mark.parametrize("game", GAMES)
def test_gymnasium_env_checker_passes(game: str) -> None:
    env = agentgym.make(game)
    try:
        check_env(env.unwrapped, skip_render_check=True)  # built without gymnasium.make: no spec for that check
    finally:
        env.close()


@pytest.mark.parametrize("game", GAMES)
def test_the_walkthrough_solves_every_task_within_the_question_budget(game: str) -> None:
    env = agentgym.make(game)
    for task in env.task_ids():
        _, info = env.reset(options={"task": task})
        walkthrough = info["walkthrough"]
        assert len(walkthrough) <= info["max_questions"] == 20
        steps = _play(env, walkthrough)
        assert all(s[4]["signals"]["valid_action"] for s in steps), (task, [s[0] for s in steps])
        assert [s[2] for s in steps] == [False] * (len(steps) - 1) + [True], task
        last = steps[-1]
        assert last[4]["success"] is True and last[4]["signals"]["guessed"] and last[4]["signals"]["candidates_left"] == 1
        assert last[1] == pytest.approx(guess_reward(len(walkthrough), 20))


def test_reset_info_carries_the_walkthrough_answer_and_budget_and_a_seed_picks_the_task() -> None:
    env = agentgym.make("twenty-questions", max_turns=15)
    obs, info = env.reset(options={"task": "20q-penguin"})
    assert info["answer"] == "penguin" and info["max_questions"] == 15 and info["walkthrough"][-1] == "My guess: penguin"
    assert info["admissible_actions"] is None and "guess" in info["instructions"] and "15 questions" in obs
    assert env.reset(seed=3)[1]["task_id"] == env.reset(seed=3)[1]["task_id"]


@pytest.mark.parametrize("task, question, reply", [
    ("20q-penguin", "Is it an animal?", "Yes."),
    ("20q-penguin", "can it FLY", "No."),
    ("20q-penguin", "Does it live in the water?", "Yes."),
    ("20q-penguin", "Is it bigger than a bread box?", "Yes."),
    ("20q-penguin", "Is it smaller than a breadbox?", "No."),  # a negative pattern asks the opposite
    ("20q-penguin", "Does it eat fish?", "Yes."),  # "eat fish" (carnivore) covers the word "fish"
    ("20q-penguin", "Is it natural?", "Yes."),
    ("20q-hammer", "Is it made of metal?", "Yes."),
    ("20q-hammer", "Is it something you'd find in a kitchen?", "No."),
    ("20q-teddy-bear", "Is it a toy?", "Yes."),
    ("city-paris-france", "Is it in Europe?", "Yes."),
    ("city-paris-france", "Is it in South America?", "No."),  # not the country alias "america"
    ("city-paris-france", "Do they speak French there?", "Yes."),
    ("city-paris-france", "Is it a French city?", "Yes."),  # the country adjective, without a speaking word
    ("city-paris-france", "Does it have more than 5 million people?", "Yes."),
    ("city-paris-france", "Is the population under 1 million?", "No."),
    ("city-paris-france", "Is it landlocked?", "Yes."),
    ("city-paris-france", "What continent is it on?", "It is in Europe."),
    ("city-nairobi-kenya", "What language is spoken there?", "The main languages spoken there are Swahili and English."),
    ("city-nairobi-kenya", "Is it more than 1000 metres above sea level?", "Yes."),
    ("city-cape-town-south-africa", "Is it in South Africa?", "Yes."),
])
def test_the_rule_oracle_answers_hand_chosen_phrasings(task: str, question: str, reply: str) -> None:
    env = agentgym.make("twenty-questions" if task.startswith("20q-") else "guess-my-city", recap=False)
    env.reset(options={"task": task})
    obs, _, terminated, _, info = env.step(question)
    assert obs == reply and info["signals"]["valid_action"] and not info["signals"]["guessed"] and not terminated


@pytest.mark.parametrize("game, question, reply", [
    ("twenty-questions", "What is it made of?", None),
    ("twenty-questions", "Tell me a joke", None),
    ("twenty-questions", "Is it an animal that can fly?", ONE_AT_A_TIME),
    ("twenty-questions", "Isn't it an animal?", NO_NEGATION),
    ("twenty-questions", "Is it a cat or a dog?", ONE_GUESS),
    ("twenty-questions", "Is it red?", "The only colour I can answer about is green: ask 'Is it green?'"),
    ("guess-my-city", "What is its name?", None),
    ("guess-my-city", "Is it in North Africa?", None),
    ("guess-my-city", "Does it have more than 3 million people?", None),
    ("guess-my-city", "Is it in Europe or Asia?", ONE_AT_A_TIME),
])
def test_questions_the_oracle_cannot_answer_are_invalid_actions(game: str, question: str, reply: str | None) -> None:
    env = agentgym.make(game, recap=False)
    env.reset(options={"task": env.task_ids()[0]})
    obs, reward, terminated, _, info = env.step(question)
    assert info["signals"]["valid_action"] is False and reward == 0.0 and not terminated
    assert info["signals"]["candidates_left"] == len(env.task_ids())  # nothing was learnt
    if reply is not None:
        assert obs == reply


def test_a_wrong_guess_says_no_and_the_game_goes_on_and_a_right_one_ends_it_with_the_scaled_reward() -> None:
    env = agentgym.make("twenty-questions", recap=False)
    env.reset(options={"task": "20q-penguin"})
    steps = _play(env, ["Is it an animal?", "Is it a bird?", "Is it a dog?", "My guess: eagle", "Is it a penguin?"])
    (_, _, _, _, animal), _, (dog, r3, t3, _, info3), (_, _, t4, _, _), (win, r5, t5, tr5, info5) = steps
    assert dog == "No." and r3 == 0.0 and not t3 and not t4 and info3["signals"]["guessed"] and info3["success"] is None
    assert animal["signals"]["candidates_left"] > info3["signals"]["candidates_left"]
    assert t5 and not tr5 and info5["success"] is True and info5["signals"]["questions_asked"] == 5
    assert win.startswith("Yes! The answer is penguin.")
    assert r5 == pytest.approx(0.9)  # 1 - 0.5 * (5 - 1) / 20
    assert guess_reward(1, 20) == 1.0 and guess_reward(20, 20) == pytest.approx(0.525)


def test_running_out_of_questions_truncates_without_success_and_names_the_answer() -> None:
    env = agentgym.make("guess-my-city", max_turns=2)
    env.reset(options={"task": "city-paris-france"})
    (_, _, _, tr1, _), (obs, reward, terminated, truncated, info) = _play(env, ["Is it in Asia?", "Is it Rome?"])
    assert not tr1 and truncated and not terminated and reward == 0.0 and info["success"] is False
    assert "It was: Paris." in obs and "1. Is it in Asia? - No." in obs  # the recap lists every exchange


@pytest.mark.parametrize("kb_of", [object_knowledge_base, city_knowledge_base], ids=["objects", "cities"])
def test_knowledge_base_entries_are_unique_distinguishable_and_their_questions_match(kb_of) -> None:
    kb = kb_of()
    assert len(kb.entries) >= 200
    names = Counter(n for e in kb.entries for n in e.names)
    assert [n for n, k in names.items() if k > 1] == []
    truths = Counter(e.truths for e in kb.entries)
    assert [sorted(e.name for e in kb.entries if e.truths == t) for t, k in truths.items() if k > 1] == []
    for entry in kb.entries:
        for name in entry.names:
            assert [e.id for e in kb.named(name)] == [entry.id]
    for feature in kb.askable:
        # The walkthrough's wording must be read back as the same feature, and never as a guess.
        found = kb.match(normalise(feature.question))
        assert (found.kind, found.feature.key if found.feature else None, found.polarity) == ("feature", feature.key, True)
        assert kb.named(normalise(feature.question)) == []


def test_every_object_gives_every_attribute() -> None:
    data = read_data("objects.json")
    assert all(set(o["attributes"]) == set(data["attributes"]) for o in data["objects"])
    assert all(isinstance(v, bool) for o in data["objects"] for v in o["attributes"].values())


def test_city_records_agree_with_themselves_and_open_answers_never_name_the_city() -> None:
    data = read_data("cities.json")
    for city in data["cities"]:
        assert city["hemisphere"] == ("southern" if city["latitude"] < 0 else "northern")
        assert city["population"] in POPULATION_BANDS and city["climate"] in data["climates"]
        assert city["country"] in data["countries"] and all(lang in data["languages"] for lang in city["languages"])
    kb = city_knowledge_base()
    assert ("in_tropics" in kb.by_id["city-havana-cuba"].truths) == (23.1 < TROPIC_LATITUDE)
    for entry in kb.entries:
        for kind in ("continent", "country", "languages", "climate", "population"):
            text = normalise(open_reply(kind, entry).text)
            assert not any(re.search(rf"\b{re.escape(n)}\b", text) for n in entry.names), (entry.name, kind)


def test_task_ids_are_stable_and_the_split_is_deterministic() -> None:
    all_ids = agentgym.make("guess-my-city").task_ids()
    train, test = (agentgym.make("guess-my-city", split=s).task_ids() for s in ("train", "test"))
    assert "city-paris-france" in all_ids and "city-washington-d-c-united-states" in all_ids
    assert sorted(train + test) == sorted(all_ids) and not set(train) & set(test)
    assert 0.1 < len(test) / len(all_ids) < 0.3 and all(split_of(t) == "test" for t in test)
    assert "20q-penguin" in agentgym.make("twenty-questions").task_ids()
    with pytest.raises(EnvConfigError, match="split"):
        agentgym.make("twenty-questions", split="dev")


def test_the_llm_oracle_answers_yes_no_questions_and_guesses_stay_rule_based() -> None:
    with FakeOpenAIServer(reply="Yes") as server:
        env = agentgym.make("twenty-questions", recap=False, oracle_base_url=server.base_url, oracle_model="fake-model")
        env.reset(options={"task": "20q-penguin"})
        (flies, _, _, _, info), (guess, _, won, _, _) = _play(env, ["Can it fly?", "Is it a penguin?"])
        server.reply = "Perhaps, in a way."
        env.reset(options={"task": "20q-penguin"})
        (_, _, _, _, vague), = _play(env, ["Is it nice?"])
    assert flies == "Yes." and info["signals"]["valid_action"]  # the model's answer, not the rules' "No."
    assert info["signals"]["candidates_left"] < len(env.task_ids())  # "fly" is still read as a feature
    assert won and guess.startswith("Yes!")
    assert len(server.requests) == 2  # the guess never reached the server
    system = server.requests[0]["messages"][0]["content"]
    assert "penguin" in system and "Yes or No" in system and server.requests[0]["messages"][1]["content"] == "Can it fly?"
    assert vague["signals"]["valid_action"] is False


def test_the_llm_oracle_names_the_server_it_cannot_reach() -> None:
    with FakeOpenAIServer() as server:
        url = server.base_url
    env = agentgym.make("guess-my-city", oracle_base_url=url, oracle_model="fake-model", oracle_timeout_s=5)
    env.reset(options={"task": "city-paris-france"})
    assert env.step("What continent is it on?")[0].startswith("It is in Europe.")  # open questions need no server
    with pytest.raises(OracleUnavailableError, match=re.escape(url)):
        env.step("Is it on the coast?")
    with pytest.raises(EnvConfigError, match="oracle_model"):
        agentgym.make("guess-my-city", oracle_base_url=url)
