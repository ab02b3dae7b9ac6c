"""Labelling responses: the `Judge` protocol and the one judgment row (`judge`), the judges
(`rule_judge`, `llm_judge`, human labels in `human` and `label_tui`; built by `judges`), the one
grading driver (`grade`), the CoT/output splitter (`split`), agreement with labelled fixtures
(`evaluate`) and reference statistics (`stats`).

May import the common modules, `experiment`, `store` and `sampling` (the LLM judge calls models
through sampling's lanes and engine); never `report` or the CLI.
"""
