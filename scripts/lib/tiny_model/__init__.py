"""A tiny random Qwen2 causal LM with a byte-level BPE ChatML tokenizer, built offline in under a second.

It loads exactly like `Qwen/Qwen2.5-0.5B-Instruct` (`from_pretrained(dir)`, ChatML template, `<|im_end|>` EOS), for
tests, benchmarks and CPU runs: `python -m scripts.lib.tiny_model /tmp/tiny-qwen2` (`__main__.py`).

    >>> from transformers import AutoModelForCausalLM
    >>> AutoModelForCausalLM.from_pretrained(build_tiny_model("/tmp/tiny-qwen2")).num_parameters() < 1_000_000
    True
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.lib.paths import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "gsm8k_sample.jsonl"  # 32 GSM8K-format problems
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, as Qwen2.5 writes it (default system prompt included), without the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _training_text() -> list[str]:
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    text = [r["question"] + "\n" + r["answer"] for r in rows]
    # Make sure every digit, operator and the format words exist as tokens.
    text.append("0123456789 + - * / = $ % , . #### Let's think step by step. The final answer is \\boxed{}")
    text.append("system user assistant You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
    return text


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with Qwen's ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_tiny_model(output_dir: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Write a random-init Qwen2ForCausalLM (<1M parameters; `sizes` override Qwen2Config's) + tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    output_dir = Path(output_dir)
    tokenizer = build_tokenizer()
    shape = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head_dim 32: the smallest vLLM's CPU attention kernels take
        "num_key_value_heads": 1,
    }
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **(shape | sizes),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
