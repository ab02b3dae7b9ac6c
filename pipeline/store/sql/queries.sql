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
SELECT f.job_id, f.scenario, f.response_text, f.finish_reason
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
