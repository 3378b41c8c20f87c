"""A tiny Llama with a locally trained tokenizer and a ChatML template, built in seconds for tests.

transformers and vLLM both load the saved directory; nothing comes from a hub.
"""

from __future__ import annotations

import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = "<|im_end|>"

_SUBJECTS = ["the cat", "a dog", "the agent", "my friend", "the robot", "a player", "the door", "the key"]
_VERBS = ["opens", "takes", "sees", "moves to", "looks at", "drops", "finds", "eats", "goes to"]
_OBJECTS = ["the box", "a red apple", "the kitchen", "the north room", "a small key", "the table", "the garden"]
_EXTRAS = ["quickly", "today", "again", "at night", "with care", "", "", ""]


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` simple generated sentences (the tokenizer's training text and test prompts)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_EXTRAS)]
        out.append(" ".join(w for w in words if w) + rng.choice([".", "!", "?", ". Then look around."]))
    return out


def build_tokenizer(vocab_size: int = 400):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained on generated sentences, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(sentences(400) + ["user assistant system"] * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token=EOS,
        pad_token=EOS,
        unk_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )


# What the fitted tiny model answers to every chat under greedy decoding.
TINY_REPLY = "the cat sat on the mat."


def build_tiny_model(out_dir: str | Path, reply: str | None = None, seed: int = 0) -> Path:
    """Save a tiny random Llama (hidden 64, 2 layers, head_dim 64) and its tokenizer to `out_dir`.

    With `reply`, the model is first fitted (a few hundred small steps) to answer every chat
    with `reply` followed by EOS, so tests can rely on what greedy decoding says.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,  # vLLM's CPU attention refuses smaller heads
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if reply is not None:
        _fit_reply(model, tokenizer, reply, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos_id, pad_token_id=eos_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _fit_reply(model, tokenizer, reply: str, seed: int, steps: int = 150) -> None:
    """Teach `model` to answer any generated one-message chat with `reply` + EOS (loss on the reply only)."""
    import torch

    rng = random.Random(seed + 1)
    reply_ids = tokenizer(reply + EOS, add_special_tokens=False)["input_ids"]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": s}], add_generation_prompt=True, tokenize=False)
        for s in sentences(200, seed=seed + 2)
    ]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(16)]
        width = max(len(p) for p in batch) + len(reply_ids)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):
            row = p + reply_ids
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, len(p) : len(row)] = torch.tensor(reply_ids)
            mask[i, : len(row)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
