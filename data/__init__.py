"""GSM8K data: the prompt template (data/prompt.py) and preparation (data/prepare_gsm8k.py)."""
