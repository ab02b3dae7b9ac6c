-- Schema version 5: reasoning models (issue 14). Only added columns: rows written before
-- have NULLs there, which the views read as "no native reasoning" and "CoT from the split".
-- A reasoning model's own trace, apart from the reply (response_text stays the reply itself).
ALTER TABLE responses ADD COLUMN reasoning_text VARCHAR;     -- the native trace, if the server returned it
ALTER TABLE responses ADD COLUMN reasoning_field VARCHAR;    -- reasoning_content | reasoning | thinking | <think> (inline)
ALTER TABLE responses ADD COLUMN reasoning_tokens INTEGER;   -- usage.completion_tokens_details.reasoning_tokens
-- Where a judgment's CoT came from: native | prompted | none | hidden (only a reasoning-token
-- count). A response with a native trace AND a prompted `Reasoning:` section is graded on both:
-- the trace is the CoT (cot_*), the prompted section is labelled in prompted_cot_*.
ALTER TABLE judgments ADD COLUMN cot_source VARCHAR;
ALTER TABLE judgments ADD COLUMN prompted_cot_present BOOLEAN;
ALTER TABLE judgments ADD COLUMN prompted_cot_text VARCHAR;
ALTER TABLE judgments ADD COLUMN prompted_cot_label VARCHAR;
