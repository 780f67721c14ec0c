"""Tiny offline models: a random-weight Qwen2-style model and a BPE tokenizer trained on bundled text.

They stand in for the paper's 7B models wherever nothing may be downloaded (tests, ``make demo``,
the CPU recipes). The tests run them for real through each stage that has one: SFT of the GSRM
(tests/test_gsrm_train.py), GRPO with the RLKD rewards (tests/test_train_rlkd.py), ``transformers
serve`` (tests/servers.py) and the lm-eval tasks through the real ``lm_eval`` CLI
(tests/test_eval_cli.py). Their outputs are noise; what they prove is that the plumbing works.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Kept as ordinary added tokens so the reward functions see them in decoded text.
ADDED_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# ChatML, with {% generation %} around assistant turns so TRL can mask the loss to them.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


# The files the tiny tokenizer learns from, named one by one: a data or prompt file added later
# must not change the tokenizer (and with it every tiny model and what the tests memorise).
TOKENIZER_DATA = ("reference_steps.jsonl", "traces.jsonl")
TOKENIZER_PROMPTS = ("annotate_code.txt", "annotate_math.txt", "annotate_puzzle.txt", "annotate_science.txt",
                     "gsrm.txt", "rlkd_system.txt")


def bundled_text() -> list[str]:
    """The text the tiny tokenizer is trained on: the bundled traces and the original prompt files."""
    from rlkd_bench.prompting import prompts_dir

    texts: list[str] = []
    data = resources.files("rlkd_bench") / "data"
    for name in TOKENIZER_DATA:
        for line in (data / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(str(v) for v in json.loads(line).values() if isinstance(v, str))
    for name in TOKENIZER_PROMPTS:
        texts.append((prompts_dir() / name).read_text(encoding="utf-8"))
    texts.append("[Meta-reasoning 1]: [Sub-problem 1]: [Answer 1]: So the final answer is: \\boxed{}")
    return texts


def build_tokenizer(vocab_size: int = 1024, *, texts: list[str] | None = None, split_digits: bool = False):
    """Train a byte-level BPE tokenizer and wrap it for transformers.

    ``texts``: what it learns from (default: the bundled text). ``split_digits``: every digit its
    own token, so a tiny model sees numbers digit by digit and can learn to add them.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts if texts is not None else bundled_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.add_tokens(ADDED_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    return fast


def build_tiny_model(out_dir: str | Path, *, hidden_size: int = 64, layers: int = 2, seed: int = 0,
                     vocab_size: int = 1024, texts: list[str] | None = None, split_digits: bool = False,
                     max_new_tokens: int = 64) -> Path:
    """Write a tiny random Qwen2 causal LM with its tokenizer to ``out_dir``; returns the path.

    Deterministic for a given seed (and ``texts``). Takes a few seconds on CPU.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer(vocab_size, texts=texts, split_digits=split_digits)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=max_new_tokens,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
