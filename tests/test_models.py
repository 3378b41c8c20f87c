"""resolve_model: aliases converted from GGUF into the cache, HF dirs passed through, clear errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentgym import models
from agentgym.errors import ModelNotFoundError
from agentgym.models import COMPLETE_MARKER, MODEL_ALIASES, resolve_model


def test_unknown_name_lists_aliases(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("smollm9-1t", cache=tmp_path)
    assert "smollm9-1t" in str(err.value)
    for alias in MODEL_ALIASES:
        assert alias in str(err.value)


def test_non_gguf_file_and_dir_without_config_are_refused(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path / "weights.bin"), cache=tmp_path)
    with pytest.raises(ModelNotFoundError):
        resolve_model(str(tmp_path), cache=tmp_path)


def test_hf_dir_is_returned_as_is(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve_model(str(tiny_model_dir), cache=tmp_path) == tiny_model_dir.resolve()
    assert not (tmp_path / "models").exists()  # nothing converted, nothing cached


def _fake_convert(calls: list[Path]):
    """A stand-in for convert_gguf that writes a config and records its calls."""

    def convert(gguf: Path, out_dir: Path) -> None:
        calls.append(gguf)
        (out_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))

    return convert


def test_gguf_file_is_converted_once_and_cached_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(models, "convert_gguf", _fake_convert(calls))
    gguf = tmp_path / "My Model.Q4.gguf"
    gguf.write_bytes(b"GGUF one")
    cache = tmp_path / "cache"
    first = resolve_model(str(gguf), cache=cache)
    assert first.parent == cache / "models" and (first / COMPLETE_MARKER).is_file()
    assert (first / "config.json").is_file()
    assert resolve_model(str(gguf), cache=cache) == first
    assert len(calls) == 1
    gguf.write_bytes(b"GGUF two")  # new content: a new entry
    second = resolve_model(str(gguf), cache=cache)
    assert second != first and len(calls) == 2
    assert sorted(p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")) == sorted(
        [first.name, second.name]
    )  # no temp dirs left behind


def test_half_written_entry_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(models, "convert_gguf", _fake_convert(calls))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    entry = resolve_model(str(gguf), cache=tmp_path / "cache")
    (entry / COMPLETE_MARKER).unlink()
    (entry / "junk").write_text("from a crashed build")
    again = resolve_model(str(gguf), cache=tmp_path / "cache")
    assert again == entry and len(calls) == 2
    assert (again / COMPLETE_MARKER).is_file() and not (again / "junk").exists()


def test_failed_conversion_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gguf: Path, out_dir: Path) -> None:
        (out_dir / "partial").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "convert_gguf", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(RuntimeError, match="disk full"):
        resolve_model(str(gguf), cache=tmp_path / "cache")
    left = [p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]
    assert left == []


@pytest.mark.slow
def test_smollm2_alias_converts_to_a_matching_hf_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = resolve_model("smollm2-135m")  # the session cache (conftest sets AGENTGYM_CACHE)
    assert model_dir.name.startswith("smollm2-135m-") and (model_dir / COMPLETE_MARKER).is_file()
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM refuses "Unknown quantization method: gguf"

    gguf = MODEL_ALIASES["smollm2-135m"].locate()
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    conversation = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == ref_tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert ids.tolist() == ref_tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        got, want = model(input_ids=ids).logits, ref(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4, rtol=0)

    # A second call finds the finished entry and converts nothing.
    def no_convert(*args: object) -> None:
        raise AssertionError("cache miss: convert_gguf was called again")

    monkeypatch.setattr(models, "convert_gguf", no_convert)
    assert resolve_model("smollm2-135m") == model_dir
