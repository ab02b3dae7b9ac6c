"""Calling models: the plan of jobs still to do (`plan`), one lane per endpoint with its limits
(`lane`, `limits`), the HTTP client (`client`), the whole retry rule (`retry.decide`), the
engine that runs jobs and hands finished ones to the store (`engine`, `journal`, `job`,
`runner`), the cost cap (`budget`), the Batch API (`batch/`), estimates before sending
(`dryrun`) and starting the embedded model (`embedded`).

May import the common modules, `experiment`, `store` and `local_model` (only to start the
embedded server); never `grading`, `report` or the CLI.
"""
