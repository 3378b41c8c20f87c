"""The `agentgym` command as a user runs it: outputs, one-line errors, Ctrl-C that loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgym.store import read_trajectories
from tests.fake_openai_server import FakeOpenAIServer

AGENTGYM = [sys.executable, "-m", "agentgym.cli"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENTGYM, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_eval_walkthrough_writes_trajectories_and_summaries(tw_games_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run("eval", "--env", "textworld", "--policy", "walkthrough", "--episodes", "6", "--concurrency", "3",
               "--env-opt", f"games_dir={tw_games_dir}", "--env-opt", "max_turns=20", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 6 and summary["success_rate"] == 1.0 and summary["invalid_action_rate"] == 0.0
    assert "| success rate | 1.000" in (out / "summary.md").read_text()
    trajs = read_trajectories(out / "trajectories.jsonl")
    assert len(trajs) == 6 and all(t.env_kwargs["max_turns"] == 20 for t in trajs)
    # The same out dir again would mix runs: refused, and the first run's file is untouched.
    again = run("eval", "--env", "textworld", "--policy", "walkthrough", "--env-opt", f"games_dir={tw_games_dir}", "--out", str(out))
    assert again.returncode == 2 and "already holds trajectories.jsonl" in again.stderr
    assert len(read_trajectories(out / "trajectories.jsonl")) == 6


def test_eval_reads_a_yaml_config_and_flags_override_it(tw_games_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"env: textworld\nenv_kwargs: {{games_dir: {tw_games_dir}}}\npolicy: {{kind: walkthrough}}\nepisodes: 3\n")
    done = run("eval", "--config", str(cfg), "--episodes", "2", "--out", str(tmp_path / "o"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["episodes"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "textwrld", "--policy", "walkthrough"], "unknown env 'textwrld'; did you mean 'textworld'"),
        (["--env", "textworld", "--policy", "walkthrough", "--env-opt", "games_dir=/no/such/dir"],
         "games directory '/no/such/dir' does not exist"),
        (["--env", "textworld", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"], "no OpenAI-compatible server at http://127.0.0.1:9/v1"),
        (["--env", "textworld"], "say which policy plays"),
        (["--env", "textworld", "--policy", "walkthrough", "--env-opt", "games-dir"], "--env-opt expects KEY=VALUE"),
    ],
)
def test_bad_input_gets_one_clear_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = run("eval", *args, "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr


def test_ctrl_c_keeps_every_finished_trajectory(tw_games_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with FakeOpenAIServer(reply="look", delay_s=0.05, model="m") as server:
        proc = subprocess.Popen(
            [*AGENTGYM, "eval", "--env", "textworld", "--base-url", server.base_url, "--model", "m",
             "--episodes", "2000", "--concurrency", "4", "--max-turns", "3",
             "--env-opt", f"games_dir={tw_games_dir}", "--out", str(out), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # A user's shell delivers SIGINT with the default disposition; a test runner may have
            # left it ignored, which the child would inherit (Python then never raises KeyboardInterrupt).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        path = out / "trajectories.jsonl"
        deadline = time.time() + 300  # a loaded 2-core machine imports torch slowly
        while time.time() < deadline and (not path.exists() or path.read_text().count("\n") < 3):
            time.sleep(0.1)
        assert proc.poll() is None, "the eval ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = path.read_text().splitlines()
    assert 3 <= len(lines) < 2000
    trajs = read_trajectories(path, strict=True)  # every line parses
    assert all(t.num_turns == 3 and t.turns[0].completion_token_ids == [101, 2] for t in trajs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["episodes"] == len(trajs)
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_envs_list_and_info() -> None:
    listing = run("envs", "list")
    assert listing.returncode == 0 and "textworld" in listing.stdout
    info = run("envs", "info", "textworld")
    assert info.returncode == 0 and "games_dir" in info.stdout and "agentgym/textworld" in info.stdout


def test_make_games_and_export(tmp_path: Path, tw_games_dir: Path) -> None:
    made = run("textworld", "make-games", "--n", "1", "--seed", "7", "--out", str(tmp_path / "g"))
    assert made.returncode == 0 and (tmp_path / "g" / "tw-easy-7.z8").exists()
    run("eval", "--env", "textworld", "--policy", "walkthrough", "--episodes", "2",
        "--env-opt", f"games_dir={tw_games_dir}", "--out", str(tmp_path / "e"), "--quiet")
    exported = run("trajectories", "export", str(tmp_path / "e" / "trajectories.jsonl"), "--out", str(tmp_path / "t.parquet"))
    assert exported.returncode == 0 and (tmp_path / "t.parquet").stat().st_size > 0
