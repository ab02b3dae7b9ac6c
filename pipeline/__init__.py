"""Async, resumable sampling pipeline for multi-turn role-play experiments.

Reproduces and generalises "Rethinking harmless refusals when fine-tuning foundation models":
scenario x variant x branch x model x seed jobs are sampled from OpenAI-compatible endpoints
and stored in DuckDB, where SQL views turn them into the paper's rates.
"""

__version__ = "0.1.0"
