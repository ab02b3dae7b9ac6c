"""Sampling through the OpenAI Batch API (`sample --batch`, `batch = true` per model):
`api` (files and batches over HTTP), `requests` (JSONL lines and their split at the documented
limits), `ledger` (file and batch ids in DuckDB before anything else happens), `collect`
(output and error files into `responses`/`jobs` rows) and `driver` (submit, poll, collect).
"""
