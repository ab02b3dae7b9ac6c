-- Schema version 4: what each call cost, and the Batch API's files and batches (issue 11).
-- Prompt tokens the provider served from its cache (billed at its cached rate), and the
-- call's cost in $ at the price in force (NULL: the model has no price, cost unknown).
ALTER TABLE responses ADD COLUMN cached_tokens INTEGER;
ALTER TABLE responses ADD COLUMN cost_usd DOUBLE;
-- The batch a call went through (NULL: an online call).
ALTER TABLE responses ADD COLUMN batch_id VARCHAR;

-- One row per Batch API batch (pipeline/sampling/batch/). Written BEFORE the upload (status
-- `preparing`), again the moment the file id is known (`uploaded`) and the moment the batch
-- exists (its id and the API's status), so a run killed at any point resumes the batches it
-- has and never submits a job twice. The writer replaces the row by batch_key.
CREATE TABLE batches (
    batch_key      VARCHAR,     -- ours, made before the upload; the input file's name is <batch_key>.jsonl
    run_id         VARCHAR,     -- the run that submitted it
    model          VARCHAR,
    base_url       VARCHAR,
    round          VARCHAR,     -- initial (sampled jobs' first call) | final (every job's graded call)
    requests       INTEGER,
    reserved_usd   DOUBLE,      -- the requests' upper-bound cost (a budget holds it until collected)
    input_file_id  VARCHAR,
    batch_id       VARCHAR,
    status         VARCHAR,     -- preparing | uploaded | validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    completed      INTEGER,     -- request_counts as the API last said
    failed         INTEGER,
    output_file_id VARCHAR,
    error_file_id  VARCHAR,
    error          VARCHAR,     -- the batch's own errors (a failed batch)
    created_at     TIMESTAMPTZ,
    updated_at     TIMESTAMPTZ,
    collected_at   TIMESTAMPTZ  -- results written to responses/jobs; NULL: still to collect
);

-- The lines of a batch's input file, joined to results by custom_id (never by order).
CREATE TABLE batch_requests (
    batch_key  VARCHAR,
    custom_id  VARCHAR,     -- <job_id>:<call>
    job_id     VARCHAR,
    call       VARCHAR,     -- initial | final
    run_id     VARCHAR,     -- the run_id the job's rows are stored under
    line       JSON         -- the JSONL line as uploaded
);
