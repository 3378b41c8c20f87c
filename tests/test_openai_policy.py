"""The OpenAI-compatible policy: token ids and logprobs when offered, graceful without, clear errors."""

from __future__ import annotations

import pytest

from agentgym.errors import ModelNotFoundError, ServerUnreachableError
from agentgym.policies.openai_http import OpenAIPolicy
from agentgym.types import Message, SamplingParams
from tests.fake_openai_server import FakeOpenAIServer

MESSAGES = [Message(role="system", content="rules"), Message(role="user", content="obs")]


async def test_records_token_ids_and_logprobs_and_passes_sampling() -> None:
    with FakeOpenAIServer(reply="go north") as server:
        policy = OpenAIPolicy(server.base_url, "fake-model")
        await policy.check()
        c = await policy.act(MESSAGES, sampling=SamplingParams(temperature=0.5, max_tokens=7, stop=["\n"], seed=3))
        await policy.aclose()
    assert c.text == "go north" and c.token_ids == [101, 2] and c.logprobs == [-0.5, -0.125]
    assert c.prompt_token_ids == list(range(11)) and (c.prompt_tokens, c.completion_tokens) == (11, 2)
    sent = server.requests[0]
    assert (sent["temperature"], sent["max_tokens"], sent["stop"], sent["seed"]) == (0.5, 7, ["\n"], 3)
    assert sent["messages"] == [{"role": "system", "content": "rules"}, {"role": "user", "content": "obs"}]


async def test_a_server_that_refuses_the_extras_is_asked_once_more_without_them() -> None:
    with FakeOpenAIServer(reply="look", strict=True) as server:
        policy = OpenAIPolicy(server.base_url, "fake-model", max_retries=0)
        first = await policy.act(MESSAGES)
        second = await policy.act(MESSAGES)
        await policy.aclose()
    assert first.text == second.text == "look" and first.token_ids is None and first.logprobs is None
    assert len(server.requests) == 3  # refused once, then two plain requests


async def test_no_server_and_unknown_model_are_clear_errors() -> None:
    with FakeOpenAIServer() as server:
        port = server.port
        with pytest.raises(ModelNotFoundError, match="it serves: fake-model"):
            await OpenAIPolicy(server.base_url, "other").check()
    with pytest.raises(ServerUnreachableError, match="connection refused"):
        await OpenAIPolicy(f"http://127.0.0.1:{port}/v1", "fake-model").check()


TOOLS = [{"type": "function", "function": {"name": "python", "description": "run code",
                                           "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}}]


async def test_a_server_without_a_tool_parser_is_asked_with_tool_choice_none() -> None:
    with FakeOpenAIServer(reply='<tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call>',
                          no_tool_parser=True) as server:
        policy = OpenAIPolicy(server.base_url, "fake-model", max_retries=0)
        first = await policy.act(MESSAGES, tools=TOOLS)
        second = await policy.act(MESSAGES, tools=TOOLS)
        await policy.aclose()
    assert first.text.startswith("<tool_call>") and second.text == first.text
    assert [r.get("tool_choice") for r in server.requests] == [None, "none", "none"]  # refused once, then asked right
    assert all(r["tools"] == TOOLS for r in server.requests)


async def test_structured_tool_calls_become_tool_call_text() -> None:
    from agentgym.tool_calls import ToolCall, parse_tool_call

    with FakeOpenAIServer(tool_call={"name": "python", "arguments": '{"code": "print(1)"}'}) as server:
        policy = OpenAIPolicy(server.base_url, "fake-model", max_retries=0)
        completion = await policy.act(MESSAGES, tools=TOOLS)
        await policy.aclose()
    assert parse_tool_call(completion.text) == ToolCall("python", {"code": "print(1)"})


async def test_a_structured_call_is_kept_and_its_result_goes_back_as_a_tool_message() -> None:
    from agentgym.rollout import EpisodeJob, RolloutConfig, RolloutEngine
    from tests.toy_envs import CountdownEnv

    with FakeOpenAIServer(tool_call={"name": "python", "arguments": '{"code": "1"}'}) as server:
        policy = OpenAIPolicy(server.base_url, "fake-model", max_retries=0)
        engine = RolloutEngine(lambda: CountdownEnv(), policy, RolloutConfig(concurrency=1, max_turns=2), env_id="countdown")
        [traj] = await engine.run([EpisodeJob(task_id="count-3", seed=0, group_id="g")])
        await policy.aclose()
    first = traj.turns[0]
    assert first.completion.startswith("<tool_call>")  # the env still reads the call as text
    reply, answer = traj.messages[first.prompt_messages[-1] + 1], traj.messages[first.prompt_messages[-1] + 2]
    assert reply.role == "assistant" and reply.content == "" and reply.tool_calls[0].id == "call_1"
    assert answer.role == "tool" and answer.tool_call_id == "call_1" and answer.content == first.observation
    # The second request carries the call and its answer in OpenAI's wire form.
    sent = server.requests[-1]["messages"]
    assert sent[-2]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {"name": "python", "arguments": '{"code": "1"}'}}]
    assert sent[-1] == {"role": "tool", "content": first.observation, "tool_call_id": "call_1"}
