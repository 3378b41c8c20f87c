"""VLLMServer and serve() on the tiny model: health, model listing, token ids + logprobs, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from transformers import AutoModelForCausalLM

from agentgym.errors import PolicyError
from agentgym.serve import VLLMServer, free_port, group_pids
from tests.tiny_model import TINY_REPLY

def live_pids(pgid: int, wait: float = 10.0) -> list[int]:
    """Non-zombie processes of a group, after giving exiting ones `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        pids = [p for p in group_pids(pgid) if _state(p) not in ("Z", "")]
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def serving_pids(port: int) -> list[int]:
    """Live processes whose command line names `--port port` (the vLLM server that serve() started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _state(int(entry.name)) not in ("Z", ""):
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--port" in argv and str(port).encode() in argv:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def server(tiny_reply_model_dir: Path) -> Iterator[VLLMServer]:
    """One vLLM server on the tiny reply model for the module."""
    with VLLMServer(tiny_reply_model_dir, name="tiny", port=0, startup_timeout=600) as s:
        yield s


@pytest.mark.slow
def test_models_route_lists_the_served_name(server: VLLMServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    client = openai.OpenAI(base_url=server.base_url, api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny"]


@pytest.mark.slow
def test_chat_completion_returns_token_ids_and_raw_logprobs(
    server: VLLMServer, tiny_reply_model_dir: Path
) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused")
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "the dog opens the box."}],
        max_tokens=30,
        temperature=0,
        logprobs=True,
        top_logprobs=0,
        extra_body={"return_token_ids": True, "return_tokens_as_token_ids": True},
    )
    data = reply.model_dump()
    choice = data["choices"][0]
    token_ids, prompt_ids = choice["token_ids"], data["prompt_token_ids"]
    entries = choice["logprobs"]["content"]
    assert choice["message"]["content"] == TINY_REPLY
    assert choice["finish_reason"] == "stop"
    assert [e["token"] for e in entries] == [f"token_id:{t}" for t in token_ids]
    # Served in float32, vLLM's logprobs are the same model's as a transformers forward pass.
    model = AutoModelForCausalLM.from_pretrained(tiny_reply_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + token_ids])).logits[0, len(prompt_ids) - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor([e["logprob"] for e in entries]), expected, atol=1e-3, rtol=0)


@pytest.mark.slow
def test_seeded_requests_that_overflow_one_steps_token_budget_do_not_kill_the_engine(server: VLLMServer) -> None:
    # Eight seeded prompts of ~900 tokens: more than vLLM's default per-step budget (2048) holds at once.
    # With chunked prefill the CPU build rewinds a seeded generator it cannot rewind and the engine dies.
    from concurrent.futures import ThreadPoolExecutor

    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    prompt = [int(t) for t in (list(range(5, 300)) * 3)[:900]]

    def ask(seed: int) -> str:
        reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=1.0, seed=seed)
        return reply.choices[0].finish_reason

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(ask, range(8)))
    assert len(reasons) == 8 and server.is_running()


def test_cpu_scheduling_args_schedule_whole_prompts_on_the_cpu_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import json

    from agentgym import serve

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 131072}))
    monkeypatch.setattr(serve, "vllm_runs_on_cpu", lambda: True)
    assert serve.cpu_scheduling_args(tmp_path) == [
        "--no-enable-chunked-prefill", "--max-model-len", "32768", "--max-num-batched-tokens", "32768"]
    assert serve.cpu_scheduling_args(tmp_path, ["--max-model-len", "4096"]) == [
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]
    assert serve.cpu_scheduling_args(tmp_path, ["--enable-chunked-prefill"]) == []  # the caller's choice wins
    monkeypatch.setattr(serve, "vllm_runs_on_cpu", lambda: False)
    assert serve.cpu_scheduling_args(tmp_path) == []


def test_vllm_settings_reach_the_server_they_configure(tmp_path: Path) -> None:
    # One mapping from the config block to the server: a renamed field or argument fails here, not mid-run.
    from trainers.config import VLLMSettings

    settings = VLLMSettings(dtype="bfloat16", kvcache_space_gib=3, startup_timeout_s=7.5)
    server = VLLMServer(tmp_path, name="x", **settings.server_kwargs())
    assert (server.dtype, server.kvcache_space_gib, server.startup_timeout) == ("bfloat16", 3, 7.5)
    assert "bfloat16" in server.command()


@pytest.mark.slow
def test_dev_mode_routes_are_open(server: VLLMServer) -> None:
    # Weight sync needs /reset_prefix_cache (and /collective_rpc), which only dev mode serves.
    root = server.base_url.removesuffix("/v1")
    assert httpx.post(f"{root}/reset_prefix_cache", timeout=30).status_code == 200


@pytest.mark.slow
def test_stop_leaves_no_process(server: VLLMServer) -> None:
    # Runs after the other tests on the module's server (file order); the fixture's own stop is then a no-op.
    pgid = server.process.pid
    assert len(live_pids(pgid, wait=0)) > 1  # the API server and its engine core
    server.stop()
    assert live_pids(pgid) == []
    assert not server.is_running()
    server.stop()  # idempotent


@pytest.mark.slow
def test_a_server_that_dies_fails_fast_with_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    s = VLLMServer(missing, name="missing", startup_timeout=600, log_path=tmp_path / "vllm.log")
    with pytest.raises(PolicyError, match="exited with code") as err:  # not the startup timeout
        s.start()
    assert str(tmp_path / "vllm.log") in str(err.value)
    assert s.process is None


@pytest.mark.slow
def test_serve_prints_the_url_and_stops_on_sigterm(tiny_reply_model_dir: Path) -> None:
    port = free_port()
    code = f"from agentgym.serve import serve; serve({str(tiny_reply_model_dir)!r}, port={port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{port}/v1"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        server_groups = {os.getpgid(pid) for pid in serving_pids(port)}
        assert server_groups and proc.pid not in server_groups  # vLLM runs in its own process group
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert all(live_pids(pgid) == [] for pgid in server_groups)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_server_does_not_outlive_a_parent_killed_with_sigkill(tiny_reply_model_dir: Path) -> None:
    """A trainer killed with kill -9 runs no cleanup: its server must still go away, not hold the port."""
    port = free_port()
    code = f"from agentgym.serve import serve; serve({str(tiny_reply_model_dir)!r}, port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}/v1"
        server_groups = {os.getpgid(pid) for pid in serving_pids(port)}
        assert server_groups
    finally:
        proc.kill()
        proc.wait()
    assert all(live_pids(pgid, wait=60) == [] for pgid in server_groups)


def test_missing_vllm_is_a_clear_policy_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import agentgym.serve as serve_module

    real_find_spec = serve_module.importlib.util.find_spec
    monkeypatch.setattr(
        serve_module.importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a)
    )
    with pytest.raises(PolicyError, match=r"\.\[cpu\]"):
        VLLMServer(tmp_path).start()
    with pytest.raises(PolicyError, match="gpu"):
        serve_module.serve(str(tmp_path))
