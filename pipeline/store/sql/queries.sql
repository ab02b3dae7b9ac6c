-- Named statements used by the pipeline's code (pipeline/store/queries.py loads them by name).
-- Views users query live in views.sql; tables in migrations/.

-- name: done_jobs
-- Which jobs are finished (resume = planned minus these), streamed in chunks.
SELECT scenario, variant, branch, model, seed, job_id FROM jobs WHERE status = 'done';

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
       r.request_messages,
       EXISTS (SELECT 1 FROM human_labels h WHERE h.job_id = k.job_id AND h.labeller = $labeller) AS labelled,
       k.reasoning_text, k.reasoning_tokens
FROM ranked k
JOIN responses r ON r.job_id = k.job_id AND r.run_id = k.run_id AND r.call = 'final'
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
-- Final replies cut off at max_tokens, per model; $run_id NULL = every run.
SELECT j.model, count(*) FILTER (WHERE r.finish_reason = 'length') AS cut, count(*) AS total
FROM jobs j JOIN responses r ON r.job_id = j.job_id AND r.run_id = j.run_id AND r.call = 'final'
WHERE j.status = 'done' AND ($run_id IS NULL OR j.run_id = $run_id)
GROUP BY j.model ORDER BY j.model;

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
