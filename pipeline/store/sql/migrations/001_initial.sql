-- Schema version 1: the tables of release 0.1.0. Migrations run once, in order, in one
-- transaction each (pipeline/store/schema.py); never edit a migration that has shipped.
CREATE TABLE meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);

-- One row per `pipeline sample` invocation.
CREATE TABLE runs (
    run_id            VARCHAR PRIMARY KEY,
    experiment        VARCHAR,
    experiment_path   VARCHAR,
    config            JSON,       -- models (API-key variable NAMES only), branches, n
    argv              JSON,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    status            VARCHAR,    -- running | completed | interrupted | failed | killed
    planned           BIGINT,     -- jobs in the plan
    pending_at_start  BIGINT,     -- jobs not yet done when the run began
    done              BIGINT,     -- jobs this run finished
    failed            BIGINT,     -- jobs this run gave up on
    pipeline_version  VARCHAR,
    hostname          VARCHAR,
    pid               INTEGER
);

-- The grid each run planned: one row per cell, with its samples per cell.
CREATE TABLE run_cells (
    run_id    VARCHAR,
    scenario  VARCHAR,
    variant   VARCHAR,
    branch    VARCHAR,
    model     VARCHAR,
    n         INTEGER
);

-- Keys are kept by the writer (pipeline/store.py TableSpec), not by PRIMARY KEY
-- constraints: DuckDB rewrites a whole ART index at each checkpoint.
-- One row per finished job (done or failed). A job is written together with all of
-- its responses in one transaction, so a crash never leaves half a job behind.
CREATE TABLE jobs (
    job_id          VARCHAR,              -- unique; hash of everything that changes its requests
    run_id          VARCHAR,
    scenario        VARCHAR,
    scenario_hash   VARCHAR,              -- content hash of the scenario file when sampled
    variant         VARCHAR,
    branch          VARCHAR,              -- sampled | refusal | rebuttal
    phrasing        INTEGER,              -- index of the refusal/rebuttal text; NULL if sampled
    model           VARCHAR,
    seed            INTEGER,
    status          VARCHAR,              -- done | failed
    error           VARCHAR,
    finished_at     TIMESTAMPTZ
);

-- One row per API call (the last attempt of it), successful or not.
CREATE TABLE responses (
    job_id            VARCHAR,
    run_id            VARCHAR,
    call              VARCHAR,     -- initial | final
    model             VARCHAR,
    base_url          VARCHAR,
    request_messages  JSON,
    request_params    JSON,
    response_text     VARCHAR,
    finish_reason     VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        DOUBLE,      -- of the last attempt
    attempts          INTEGER,
    http_status       INTEGER,
    error             VARCHAR,
    created_at        TIMESTAMPTZ
);

-- One row per (final response, judge, judge version): re-grading with a new judge never
-- resamples and never overwrites another judge's labels.
CREATE TABLE judgments (
    job_id         VARCHAR,
    judge          VARCHAR,     -- e.g. rule, llm:gpt-4o
    judge_version  VARCHAR,
    cot_present    BOOLEAN,
    cot_text       VARCHAR,
    output_text    VARCHAR,
    output_label   VARCHAR,     -- unethical | acceptable | unclear
    cot_label      VARCHAR,     -- predicted from the CoT alone: unethical | acceptable | no_cot | unclear
    detail         JSON,        -- why: matched rules, or the LLM judge's raw answers
    graded_at      TIMESTAMPTZ       -- unique per (job_id, judge, judge_version)
);
