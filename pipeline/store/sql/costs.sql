-- What sampling cost (issue 11): every stored call, also of failed jobs (they were billed).
-- cost_usd sums the priced calls (NULL when none was priced: unknown, never 0);
-- unpriced_calls counts answered calls whose model had no price.
CREATE OR REPLACE VIEW costs AS
SELECT r.run_id, j.scenario, j.variant, j.branch, r.model,
       count(*) AS calls,
       count(*) FILTER (WHERE r.batch_id IS NOT NULL) AS batch_calls,
       sum(r.prompt_tokens) AS prompt_tokens,
       sum(r.cached_tokens) AS cached_tokens,
       sum(r.completion_tokens) AS completion_tokens,
       sum(r.cost_usd) AS cost_usd,
       count(*) FILTER (WHERE r.cost_usd IS NULL AND r.error IS NULL) AS unpriced_calls
FROM responses r LEFT JOIN jobs j ON j.job_id = r.job_id
GROUP BY ALL ORDER BY r.run_id, j.scenario, j.variant, j.branch, r.model;

-- Per model over every run: what `pipeline status` prints.
CREATE OR REPLACE VIEW costs_by_model AS
SELECT model, sum(calls) AS calls, sum(batch_calls) AS batch_calls, sum(prompt_tokens) AS prompt_tokens,
       sum(cached_tokens) AS cached_tokens, sum(completion_tokens) AS completion_tokens,
       sum(cost_usd) AS cost_usd, sum(unpriced_calls) AS unpriced_calls
FROM costs GROUP BY model ORDER BY model;
