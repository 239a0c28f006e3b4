"""Evaluation: `evaluate` (GSM8K accuracy of one model), `capability` (general benchmarks), `report` (models side
by side with confidence intervals), `run_all` (every stage's model, then the report), `report_card` (one run).
Libraries beside them: `evaluation`, `capability_suite`, `comparison`, `stats`."""
