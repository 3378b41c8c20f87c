"""End to end with the real SmolLM2-135M-Instruct: in process, and served by vLLM (`agentgym serve`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentgym.store import read_trajectories

pytestmark = pytest.mark.slow
AGENTGYM = [sys.executable, "-m", "agentgym.cli"]


def _eval(out: Path, games: Path, *policy_args: str, episodes: int, concurrency: int) -> list:
    done = subprocess.run(
        [*AGENTGYM, "eval", "--env", "textworld", *policy_args, "--episodes", str(episodes),
         "--concurrency", str(concurrency), "--max-turns", "2", "--max-tokens", "12", "--temperature", "0.7",
         "--env-opt", f"games_dir={games}", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == episodes and summary["errors"] == 0
    assert summary["tokens_out"] > 0 and summary["tokens_in"] > 0
    trajs = read_trajectories(out / "trajectories.jsonl", strict=True)
    for t in trajs:
        for turn in t.turns:
            assert turn.prompt_token_ids and turn.completion_token_ids
            assert len(turn.completion_logprobs) == len(turn.completion_token_ids) == turn.completion_tokens
            assert all(lp <= 0.0 for lp in turn.completion_logprobs)
    return trajs


def test_eval_with_the_in_process_model_records_token_ids_and_logprobs(tw_games_dir: Path, tmp_path: Path) -> None:
    trajs = _eval(tmp_path / "run", tw_games_dir, "--model", "smollm2-135m", episodes=4, concurrency=4)
    assert {t.policy.kind for t in trajs} == {"transformers"}


def test_serve_then_eval_through_the_openai_api(tw_games_dir: Path, tmp_path: Path) -> None:
    server = subprocess.Popen(
        [*AGENTGYM, "serve", "--model", "smollm2-135m", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        base_url = server.stdout.readline().strip()  # printed once the server is healthy
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1"), server.stderr.read()[-3000:]
        trajs = _eval(tmp_path / "run", tw_games_dir, "--base-url", base_url, "--model", "smollm2-135m",
                      episodes=8, concurrency=8)
        assert {t.policy.kind for t in trajs} == {"openai"} and trajs[0].policy.base_url == base_url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
    assert server.returncode == 0
