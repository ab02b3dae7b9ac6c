-- Schema version 2: labels given by people (`pipeline label`, `pipeline label import`).
-- One row per label given (a relabel adds a row); the views count the newest per job. The CoT label is given
-- with the output hidden, so it says what the reasoning alone predicts.
CREATE TABLE human_labels (
    job_id        VARCHAR,
    labeller      VARCHAR,
    output_label  VARCHAR,     -- unethical | acceptable | unclear
    cot_label     VARCHAR,     -- unethical | acceptable | no_cot | unclear
    cot_present   BOOLEAN,
    note          VARCHAR,
    labelled_at   TIMESTAMPTZ
);
