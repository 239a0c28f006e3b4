"""The shared offline fixtures load the way later tests rely on."""

import re

from transformers import AutoModelForCausalLM, AutoTokenizer


def test_gsm8k_fixture_has_the_edge_cases(gsm8k_rows):
    finals = [row["answer"].rsplit("####", 1)[1].strip() for row in gsm8k_rows]
    assert 25 <= len(gsm8k_rows) <= 40
    assert all(re.search(r"<<[^>]*=[^>]*>>", row["answer"]) for row in gsm8k_rows)  # calculator annotations
    assert any("," in f for f in finals)  # thousands separators, e.g. "12,500"
    assert any(f.startswith("-") for f in finals)  # a negative answer
    assert all(row["question"].strip() for row in gsm8k_rows)


def test_tiny_model_loads_like_qwen(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.num_parameters() < 1_000_000
    specials = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    ids = [tok.encode(special, add_special_tokens=False) for special in specials]
    assert all(len(i) == 1 for i in ids)  # each special token is one token, never split into bytes
    assert len({i[0] for i in ids}) == 3
    assert tok.decode(ids[1]) == "<|im_end|>"
    assert tok.eos_token == "<|im_end|>"
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
