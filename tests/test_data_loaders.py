"""The prepared files load in the real consumers: verl 0.9.1's RLHFDataset and TRL's SFTTrainer data path.

Both run on CPU with the tiny Qwen2 model and ChatML tokenizer (tests/tiny_model.py), on the output
of data/prepare_gsm8k.py for the fixture (`gsm8k_data_dir`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import verl
from datasets import load_dataset
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from verl.protocol import DataProto
from verl.trainer.ppo.utils import create_rl_dataset
from verl.utils import hf_tokenizer
from verl.utils.dataset.rl_dataset import collate_fn

VERL_DATA_CONFIG = Path(verl.__file__).parent / "trainer" / "config" / "data" / "legacy_data.yaml"


@pytest.mark.parametrize("split, rows", [("train", 20), ("val", 4), ("test", 8)])
def test_verl_rlhf_dataset_loads_filters_nothing_and_collates(gsm8k_data_dir, tiny_model_dir, tmp_path, split, rows):
    # verl's own data config (what `data.*` resolves to in ppo_trainer), with the settings our RL configs use.
    config = OmegaConf.load(VERL_DATA_CONFIG)
    config.merge_with(
        {
            "max_prompt_length": 512,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "return_raw_chat": True,
            "cache_dir": str(tmp_path / "verl-cache"),
        }
    )
    tokenizer = hf_tokenizer(str(tiny_model_dir))
    dataset = create_rl_dataset([str(gsm8k_data_dir / f"{split}.parquet")], config, tokenizer, None, is_train=True)
    assert len(dataset) == rows  # nothing filtered as overlong (or as a prompt the chat template cannot render)

    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_fn)))
    assert batch["dummy_tensor"].shape == (4, 1)
    first = batch["raw_prompt"][0]
    assert first[0]["role"] == "user" and first[0]["content"].endswith('output the final answer after "####".')
    assert all(info["split"] == split for info in batch["extra_info"])
    assert list(batch["index"]) == [info["index"] for info in batch["extra_info"]]
    assert all(rm["style"] == "rule" and rm["ground_truth"] for rm in batch["reward_model"])
    assert set(batch["data_source"]) == {"openai/gsm8k"}
    # What the trainer does with each batch: one DataProto, the non-tensors keyed as above.
    proto = DataProto.from_single_dict(batch)
    assert len(proto) == 4 and proto.non_tensor_batch["reward_model"][0]["ground_truth"]


def test_trl_sft_loss_mask_covers_exactly_the_completion(gsm8k_data_dir, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    files = {"train": str(gsm8k_data_dir / "sft_train.parquet"), "val": str(gsm8k_data_dir / "sft_val.parquet")}
    data = load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "hf-datasets"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        report_to="none",
        max_length=1024,
        per_device_train_batch_size=2,
        use_cpu=True,
    )
    trainer = SFTTrainer(
        model=str(tiny_model_dir),
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["val"],
        processing_class=tokenizer,
    )
    assert trainer.completion_only_loss  # TRL recognised the prompt-completion format
    for prepared, raw in ((trainer.train_dataset, data["train"]), (trainer.eval_dataset, data["val"])):
        assert len(prepared) == len(raw)  # nothing dropped (truncation, empty completions)
        for example, row in zip(prepared, raw, strict=True):
            prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            full_text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
            assert full_text.startswith(prompt_text)
            labels, ids = example["labels"], example["input_ids"]
            n_masked = next(i for i, label in enumerate(labels) if label != -100)
            assert all(label == -100 for label in labels[:n_masked])  # the prompt, then only completion tokens
            assert labels[n_masked:] == ids[n_masked:]
            assert tokenizer.decode(ids[:n_masked]) == prompt_text
            completion = tokenizer.decode(labels[n_masked:])
            assert completion == full_text[len(prompt_text) :]  # the assistant turn as the chat template renders it
            assert completion.startswith(row["completion"][0]["content"])
            assert completion.rstrip().endswith("<|im_end|>")  # the model learns to stop

    # The collator turns prepared rows into a batch the model trains on.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        loss = trainer.model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}).loss
    assert torch.isfinite(loss)
