-- Schema version 4: what each call cost, and the Batch API's files and batches (issue 11).
-- Prompt tokens the provider served from its cache (billed at its cached rate), and the
-- call's cost in $ at the price in force (NULL: the model has no price, cost unknown).
ALTER TABLE responses ADD COLUMN cached_tokens INTEGER;
ALTER TABLE responses ADD COLUMN cost_usd DOUBLE;
-- The batch a call went through (NULL: an online call).
ALTER TABLE responses ADD COLUMN batch_id VARCHAR;
