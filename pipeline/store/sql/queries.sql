-- Named statements used by the pipeline's code (pipeline/store/queries.py loads them by name).
-- Views users query live in views.sql; tables in migrations/.

-- name: done_jobs
-- Which jobs are finished (resume = planned minus these), streamed in chunks.
SELECT scenario, variant, branch, model, seed, job_id FROM jobs WHERE status = 'done';

-- name: count_prompts
-- Sizes the writer's filter of stored prompt ids (pipeline/store/prompts.py).
SELECT count(*) FROM prompts;

-- name: prompt_ids
-- Every stored prompt id, streamed in chunks into that filter.
SELECT prompt_id FROM prompts;

-- name: mark_killed_runs
-- Called while holding the run lock: a run still marked running was killed (kill -9, power cut).
UPDATE runs SET status = 'killed' WHERE status = 'running';

-- name: insert_run_cell
INSERT INTO run_cells VALUES (?, ?, ?, ?, ?, ?);

-- name: finish_run
UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?;

-- name: count_run
-- Keeps a run's counters in step with what is committed (same transaction as the batch).
UPDATE runs SET done = ?, failed = ? WHERE run_id = ?;

-- name: ungraded_page
-- Final responses a judge version has not labelled, by keyset pages (in-flight items are never
-- fetched twice).
SELECT f.job_id, f.scenario, f.response_text, f.finish_reason, f.reasoning_text, f.reasoning_tokens
FROM final_responses f
ANTI JOIN judgments j ON j.job_id = f.job_id AND j.judge = $judge AND j.judge_version = $version
WHERE list_contains($scenarios, f.scenario) AND f.job_id > $after
ORDER BY f.job_id LIMIT $limit;

-- name: ungraded_count
SELECT count(*)
FROM final_responses f
ANTI JOIN judgments j ON j.job_id = f.job_id AND j.judge = $judge AND j.judge_version = $version
WHERE list_contains($scenarios, f.scenario);

-- name: unknown_scenarios
SELECT DISTINCT scenario FROM final_responses WHERE NOT list_contains($scenarios, scenario);

-- name: recent_runs
SELECT run_id, experiment, status, started_at, finished_at, planned, pending_at_start, done, failed
FROM runs ORDER BY started_at DESC LIMIT 5;

-- name: label_sample
-- `pipeline label`: a seeded, stratified sample of final responses. Within each cell the
-- responses are shuffled by md5(job_id, seed) and the first $per_cell taken, so the same seed
-- gives the same sample and a larger $per_cell extends it. Interleaved across cells (draw
-- first), so a session stopped early still covers every cell evenly.
WITH ranked AS (
    SELECT f.job_id, f.run_id, f.scenario, f.variant, f.branch, f.model, f.response_text, f.finish_reason,
           f.reasoning_text, f.reasoning_tokens,
           row_number() OVER (PARTITION BY f.scenario, f.variant, f.branch, f.model
                              ORDER BY md5(f.job_id || ':' || $seed::VARCHAR)) AS draw
    FROM final_responses f
    WHERE ($scenario IS NULL OR f.scenario = $scenario) AND ($variant IS NULL OR f.variant = $variant)
      AND ($branch IS NULL OR f.branch = $branch) AND ($model IS NULL OR f.model = $model)
)
SELECT k.job_id, k.scenario, k.variant, k.branch, k.model, k.response_text, k.finish_reason,
       p.messages,
       EXISTS (SELECT 1 FROM human_labels h WHERE h.job_id = k.job_id AND h.labeller = $labeller) AS labelled,
       k.reasoning_text, k.reasoning_tokens
FROM ranked k
JOIN responses r ON r.job_id = k.job_id AND r.run_id = k.run_id AND r.call = 'final'
LEFT JOIN prompts p ON p.prompt_id = r.prompt_id
WHERE k.draw <= $per_cell
ORDER BY k.draw, k.scenario, k.variant, k.branch, k.model;

-- name: known_final_jobs
-- Which of $job_ids are done jobs with a final response (label import validates against it).
SELECT job_id FROM final_responses WHERE list_contains($job_ids, job_id);

-- name: stored_human_labels
-- Stored labels of some jobs, timestamps as UTC text (label import skips lines already stored).
SELECT job_id, labeller, output_label, cot_label, cot_present, coalesce(note, ''),
       strftime(timezone('UTC', labelled_at), '%Y-%m-%dT%H:%M:%S.%f+00:00')
FROM human_labels WHERE list_contains($job_ids, job_id);

-- name: export_human_labels
-- Every human label (superseded ones too: the newest per job and labeller counts) with its cell.
SELECT h.job_id, j.scenario, j.variant, j.branch, j.model, h.labeller, h.output_label, h.cot_label,
       h.cot_present, h.note,
       strftime(timezone('UTC', h.labelled_at), '%Y-%m-%dT%H:%M:%S.%f+00:00') AS labelled_at
FROM human_labels h LEFT JOIN jobs j ON j.job_id = h.job_id
ORDER BY h.labelled_at, h.job_id, h.labeller;

-- name: embedded_models
-- Models some run served with the embedded tiny model (the report flags their rows).
SELECT DISTINCT m.name
FROM (SELECT unnest(from_json(config -> 'models', '[{"name": "VARCHAR", "embedded": "BOOLEAN"}]')) AS m
      FROM runs WHERE config IS NOT NULL)
WHERE m.embedded;

-- name: run_top_error
-- The summary of a run in which every job failed says why: its most common error.
SELECT error, count(*) AS jobs FROM jobs WHERE run_id = ? AND status = 'failed'
GROUP BY error ORDER BY jobs DESC, error LIMIT 1;

-- name: truncation_by_model
-- Final replies cut off at max_tokens, per model; $run_id NULL = every run. A final call that
-- answered ends its job, so no join to `jobs` is needed: one scan, a few groups (a join over a
-- million jobs took 100 MB at the end of every run, the run's peak).
SELECT model, count(*) FILTER (WHERE finish_reason = 'length') AS cut, count(*) AS total
FROM responses
WHERE call = 'final' AND error IS NULL AND ($run_id IS NULL OR run_id = $run_id)
GROUP BY model ORDER BY model;

-- name: reply_lengths_by_model
-- What earlier replies of each model needed: the cap they were sent with, how many hit it, and
-- the longest reply that ended by itself.
SELECT model, TRY_CAST(request_params ->> 'max_tokens' AS INTEGER) AS max_tokens,
       count(*) FILTER (WHERE finish_reason = 'length') AS cut, count(*) AS total,
       max(completion_tokens) FILTER (WHERE finish_reason = 'stop') AS longest_complete
FROM responses WHERE error IS NULL
GROUP BY ALL ORDER BY model, max_tokens;

-- name: truncation_by_cell
SELECT scenario, variant, branch, model, count(*) AS cut
FROM final_responses WHERE finish_reason = 'length'
GROUP BY ALL ORDER BY ALL;

-- name: export_final_responses
-- `pipeline export`: one row per final response with its cell, texts, usage of the whole job and
-- the newest human label; the exporter joins each judge's newest labels to it (`judge_labels`).
WITH usage AS (
    SELECT job_id, run_id, sum(prompt_tokens)::BIGINT AS job_prompt_tokens,
           sum(completion_tokens)::BIGINT AS job_completion_tokens,
           count(*) AS calls
    FROM responses GROUP BY job_id, run_id
)
SELECT f.scenario, f.variant, f.branch, f.phrasing, f.model, f.seed, f.job_id, f.run_id,
       p.messages ->> '$[#-2].content' AS initial_text, p.messages ->> '$[#-1].content' AS trigger_text,
       f.response_text, f.finish_reason, f.prompt_tokens, f.completion_tokens,
       u.job_prompt_tokens, u.job_completion_tokens, u.calls,
       h.output_label AS human_output_label, h.cot_label AS human_cot_label, h.cot_present AS human_cot_present,
       h.judge_version AS human_labeller
FROM final_responses f
JOIN responses r ON r.job_id = f.job_id AND r.run_id = f.run_id AND r.call = 'final'
LEFT JOIN prompts p ON p.prompt_id = r.prompt_id
LEFT JOIN usage u ON u.job_id = f.job_id AND u.run_id = f.run_id
LEFT JOIN current_human_labels h ON h.job_id = f.job_id;

-- name: judge_labels
-- Each judge's newest labels of each job; the exporter joins them once per judge (filtered to
-- it): joins spill to disk, where a list of every judge's labels per job could not.
SELECT job_id, judge, judge_version, output_label, cot_label, cot_present, cot_text, output_text
FROM current_judgments;

-- name: export_judges
-- The judges whose labels an export widens into columns.
SELECT DISTINCT judge FROM current_judgments WHERE $judge IS NULL OR judge = $judge ORDER BY judge;

-- name: model_speeds
-- Requests per second each model reached in its newest run of at least 10 calls (from the run's
-- start, server start-up included): `sample --dry-run` estimates a run without limits from it.
SELECT model, arg_max(calls / seconds, started_at) AS requests_per_s
FROM (SELECT r.model, r.run_id, u.started_at, count(*) AS calls,
             epoch(max(r.created_at)) - epoch(u.started_at) AS seconds
      FROM responses r JOIN runs u USING (run_id) WHERE r.error IS NULL
      GROUP BY r.model, r.run_id, u.started_at HAVING count(*) >= 10)
WHERE seconds > 0
GROUP BY model;

-- name: experiment_spent
-- What an experiment's runs have cost so far (the budget cap counts it).
SELECT sum(r.cost_usd) FROM responses r JOIN runs u ON u.run_id = r.run_id WHERE u.experiment = ?;

-- name: mean_reply_by_model
-- How long a model's answered replies were, on average (the dry run's expected reply length).
SELECT model, avg(completion_tokens) FROM responses
WHERE error IS NULL AND completion_tokens IS NOT NULL GROUP BY model;

-- name: open_batches
-- Batches not collected yet (every column of `batches`; times as UTC text), oldest first.
SELECT * REPLACE (strftime(timezone('UTC', created_at), '%Y-%m-%dT%H:%M:%S.%f+00:00') AS created_at,
                  strftime(timezone('UTC', updated_at), '%Y-%m-%dT%H:%M:%S.%f+00:00') AS updated_at,
                  NULL::VARCHAR AS collected_at)
FROM batches WHERE collected_at IS NULL AND list_contains(?, model) ORDER BY batches.created_at, batch_key;

-- name: in_flight_requests
SELECT q.custom_id FROM batch_requests q JOIN batches b USING (batch_key) WHERE b.collected_at IS NULL;

-- name: batch_initial_replies
-- Sampled jobs' initial replies that came back from a batch (the final round is built on them).
SELECT job_id, arg_max(run_id, created_at), arg_max(response_text, created_at)
FROM responses WHERE call = 'initial' AND batch_id IS NOT NULL AND error IS NULL
GROUP BY job_id;

-- name: batch_request_lines
SELECT custom_id, job_id, call, run_id, line FROM batch_requests WHERE batch_key = ? ORDER BY custom_id;

-- name: count_batches
SELECT count(*) FROM batches;

-- name: batch_status
-- What `pipeline status` lists: every batch, newest first.
SELECT model, round, status, requests, completed, failed, batch_id, input_file_id,
       created_at, collected_at IS NOT NULL AS collected
FROM batches ORDER BY created_at DESC LIMIT 20;

-- ---------------------------------------------------------------- `pipeline view` (pipeline/view/)

-- name: view_runs
-- The newest runs with what their calls used. Retries count every attempt after a call's first
-- (429s and 5xx alike: the run's summary splits them, the database keeps only the total);
-- last_429 counts calls whose last attempt was still a 429; top_error is the most common error
-- of its failed jobs; cost_usd sums the priced calls (NULL: none priced, unknown) and
-- unpriced_calls counts answered calls without a price (as the `costs` view does). Times are UTC text (a TIMESTAMPTZ
-- value would need pytz in Python).
WITH recent AS (SELECT * FROM runs ORDER BY started_at DESC LIMIT $limit),
calls AS (
    SELECT run_id, count(*) AS calls, sum(attempts - 1) AS retries,
           count(*) FILTER (WHERE http_status = 429) AS last_429,
           sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
           sum(cost_usd) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL AND error IS NULL) AS unpriced_calls
    FROM responses WHERE run_id IN (SELECT run_id FROM recent) GROUP BY run_id
)
SELECT r.run_id, r.experiment, r.status, strftime(timezone('UTC', r.started_at), '%Y-%m-%d %H:%M:%S') AS started_at,
       strftime(timezone('UTC', r.finished_at), '%Y-%m-%d %H:%M:%S') AS finished_at, r.planned, r.pending_at_start,
       r.done, r.failed, coalesce(c.calls, 0) AS calls, coalesce(c.retries, 0) AS retries,
       coalesce(c.last_429, 0) AS last_429, coalesce(c.prompt_tokens, 0) AS prompt_tokens,
       coalesce(c.completion_tokens, 0) AS completion_tokens, c.cost_usd, coalesce(c.unpriced_calls, 0) AS unpriced_calls,
       (SELECT j.error FROM jobs j WHERE j.run_id = r.run_id AND j.status = 'failed'
        GROUP BY j.error ORDER BY count(*) DESC, j.error LIMIT 1) AS top_error
FROM recent r LEFT JOIN calls c USING (run_id)
ORDER BY r.started_at DESC;

-- name: view_cells
-- Each cell of the latest plans with its progress and how many of its responses people labelled.
SELECT s.scenario, s.variant, s.branch, s.model, s.planned, s.done, s.failed, s.pending,
       coalesce(h.labelled, 0) AS human_labelled
FROM cell_status s
LEFT JOIN (SELECT scenario, variant, branch, model, count(*) AS labelled
           FROM current_human_labels GROUP BY ALL) h USING (scenario, variant, branch, model)
ORDER BY s.scenario, s.variant, s.branch, s.model;

-- name: view_rates
SELECT scenario, variant, branch, model, judge, judge_version, n, n_clear, n_unclear,
       unethical_rate, unethical_lo, unethical_hi, consistency_rate, consistency_lo, consistency_hi,
       cot_rate, cot_lo, cot_hi, deception_rate, deception_lo, deception_hi
FROM rates ORDER BY scenario, variant, branch, model, judge;

-- name: view_rates_corrected
-- Corrected rates only where people labelled something in the cell.
SELECT scenario, variant, branch, model, judge, judge_version, n_judge, n_human,
       unethical_rate, unethical_lo, unethical_hi, consistency_rate, consistency_lo, consistency_hi,
       cot_rate, cot_lo, cot_hi, deception_rate, deception_lo, deception_hi
FROM rates_corrected WHERE n_human > 0 ORDER BY scenario, variant, branch, model, judge;

-- name: view_fingerprint
-- Changes whenever a figure could change: the viewer redraws the report's figures only then.
SELECT (SELECT count(*) FROM judgments), (SELECT max(graded_at) FROM judgments)::VARCHAR,
       (SELECT count(*) FROM human_labels), (SELECT max(labelled_at) FROM human_labels)::VARCHAR,
       (SELECT count(*) FROM jobs), (SELECT max(finished_at) FROM jobs)::VARCHAR;

-- name: view_judges
SELECT DISTINCT judge FROM judgments ORDER BY judge;

-- name: view_cell_phrasings
SELECT DISTINCT phrasing FROM jobs
WHERE scenario = $scenario AND variant = $variant AND ($branch IS NULL OR branch = $branch) AND model = $model
  AND phrasing IS NOT NULL
ORDER BY phrasing;

-- name: view_cell_page
-- One page of a cell's jobs ($branch NULL: the cell's three branches together). Keyset paging on (seed, job_id): the rows after the cursor
-- ($after_seed, $after_job), or before it when $backward, $limit of them, each with the number of
-- all matches. Status and phrasing are optional (NULL = any); the filters that need another
-- table are the view_filter_* fragments, put in place of the marker below only when asked for
-- (pipeline/view/reads.py), so an unfiltered page reads the cell's job rows and nothing else,
-- and texts only for the rows shown.
WITH matching AS (
    SELECT j.job_id, j.branch, j.seed, j.phrasing, j.status, j.error, j.run_id, count(*) OVER () AS total
    FROM jobs j
    WHERE j.scenario = $scenario AND j.variant = $variant AND ($branch IS NULL OR j.branch = $branch)
      AND j.model = $model
      AND ($status IS NULL OR j.status = $status) AND ($phrasing IS NULL OR j.phrasing = $phrasing)
      /* filters */
), page AS (
    SELECT * FROM matching
    WHERE $after_seed IS NULL
       OR (NOT $backward AND (seed > $after_seed OR (seed = $after_seed AND job_id > $after_job)))
       OR ($backward AND (seed < $after_seed OR (seed = $after_seed AND job_id < $after_job)))
    ORDER BY CASE WHEN NOT $backward THEN seed END, CASE WHEN NOT $backward THEN job_id END,
             CASE WHEN $backward THEN seed END DESC, CASE WHEN $backward THEN job_id END DESC
    LIMIT $limit
)
SELECT p.job_id, p.branch, p.seed, p.phrasing, p.status, p.error, r.finish_reason, r.completion_tokens, r.truncated,
       p.total, left(r.response_text, 600) AS reply_start
FROM page p
LEFT JOIN responses r ON r.job_id = p.job_id AND r.run_id = p.run_id AND r.call = 'final'
ORDER BY p.seed, p.job_id;

-- name: view_filter_finish
-- (fragment of view_cell_page) the final reply's finish_reason; 'none': no final reply
AND coalesce((SELECT r.finish_reason FROM responses r
              WHERE r.job_id = j.job_id AND r.run_id = j.run_id AND r.call = 'final'), 'none') = $finish

-- name: view_filter_judge
-- (fragment of view_cell_page) labelled by $judge's newest version, with these labels if given
AND EXISTS (SELECT 1 FROM current_judgments g
            WHERE g.job_id = j.job_id AND g.judge = $judge
              AND ($output IS NULL OR g.output_label = $output) AND ($cot IS NULL OR g.cot_label = $cot))

-- name: view_filter_human
-- (fragment of view_cell_page) labelled by a person, or not
AND EXISTS (SELECT 1 FROM human_labels h WHERE h.job_id = j.job_id) = $human

-- name: view_filter_disagree
-- (fragment of view_cell_page) two current labels (judges' and the newest human one) differ
AND j.job_id IN (SELECT job_id FROM all_labels
                 WHERE scenario = $scenario AND variant = $variant AND ($branch IS NULL OR branch = $branch)
                   AND model = $model
                 GROUP BY job_id, metric HAVING count(DISTINCT label) > 1)

-- name: view_filter_search
-- (fragment of view_cell_page) a reply (initial or final) contains $q, case-insensitively
AND EXISTS (SELECT 1 FROM responses s
            WHERE s.job_id = j.job_id AND s.run_id = j.run_id AND contains(lower(s.response_text), lower($q)))

-- name: view_labels_of
-- Every current label of some jobs: each judge's newest version and the newest human label.
SELECT job_id, judge, judge_version, output_label, cot_label FROM current_judgments
WHERE list_contains($job_ids, job_id)
UNION ALL
SELECT job_id, 'human', judge_version, output_label, cot_label FROM current_human_labels
WHERE list_contains($job_ids, job_id)
ORDER BY job_id, judge;

-- name: view_job
SELECT job_id, run_id, scenario, scenario_hash, variant, branch, phrasing, model, seed, status, error,
       strftime(timezone('UTC', finished_at), '%Y-%m-%d %H:%M:%S') AS finished_at
FROM jobs WHERE job_id = $job_id;

-- name: view_job_calls
-- A job's calls from the run that finished it, initial before final.
SELECT r.call, r.model, r.base_url, p.request_messages, r.request_params, r.response_text, r.finish_reason,
       r.prompt_tokens, r.completion_tokens, r.latency_ms, r.attempts, r.http_status, r.error,
       strftime(timezone('UTC', r.created_at), '%Y-%m-%d %H:%M:%S') AS created_at, r.truncated,
       r.cached_tokens, r.cost_usd, r.batch_id, r.reasoning_text, r.reasoning_field, r.reasoning_tokens
FROM responses r JOIN jobs j ON j.job_id = r.job_id AND j.run_id = r.run_id
LEFT JOIN prompt_messages p ON p.prompt_id = r.prompt_id
WHERE r.job_id = $job_id
ORDER BY r.call = 'final', r.created_at;

-- name: view_job_judgments
-- Every judgment of a job, each marked whether it is its judge's newest version.
WITH newest AS (SELECT judge, arg_max(judge_version, graded_at) AS version FROM judgments GROUP BY judge)
SELECT g.judge, g.judge_version, g.judge_version = n.version AS current, g.cot_present, g.output_label,
       g.cot_label, g.cot_source, g.detail, strftime(timezone('UTC', g.graded_at), '%Y-%m-%d %H:%M:%S') AS graded_at
FROM judgments g JOIN newest n USING (judge)
WHERE g.job_id = $job_id
ORDER BY current DESC, g.judge, g.graded_at DESC;

-- name: view_job_human_labels
SELECT labeller, output_label, cot_label, cot_present, note,
       strftime(timezone('UTC', labelled_at), '%Y-%m-%d %H:%M:%S') AS labelled_at
FROM human_labels WHERE job_id = $job_id ORDER BY human_labels.labelled_at DESC;
