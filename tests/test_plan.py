"""The grid and job ids: stable, content-derived, lazily streamed."""

from __future__ import annotations

from pathlib import Path

from pipeline.experiment.config import load_experiment
from pipeline.sampling.plan import ORDER_BLOCK, DoneIndex, pending_jobs, plan_cells
from tests.conftest import Workspace


def all_ids(experiment_path: Path, n: int) -> dict[tuple, str]:
    cells = plan_cells(load_experiment(experiment_path), n)
    return {(*job.cell.key, job.seed): job.job_id for job in pending_jobs(cells, DoneIndex(cells))}


def test_grid_size_and_branch_phrasing_rotation(workspace: Workspace) -> None:
    cells = plan_cells(load_experiment(workspace.write_experiment("http://h/v1")), 5)
    # demo: 2 variants x 3 branches; plain: 1 variant x 3 branches
    assert len(cells) == 9
    jobs = list(pending_jobs(cells, DoneIndex(cells)))
    assert len(jobs) == 45 and len({j.job_id for j in jobs}) == 45
    refusal = [j for j in jobs if j.cell.key == ("demo", "car", "refusal", "fake-model")]
    assert [j.phrasing for j in refusal] == [0, 1, 0, 1, 0]
    assert all(j.phrasing is None for j in jobs if j.cell.branch == "sampled")
    # cell-major within a block of seeds: one conversation's requests back to back
    assert [(j.cell.key, j.seed) for j in jobs[:5]] == [(cells[0].key, seed) for seed in range(5)]
    assert [j.cell.key for j in jobs[5:10]] == [cells[1].key] * 5


def test_pending_jobs_fill_every_cell_block_by_block(workspace: Workspace) -> None:
    cells = plan_cells(load_experiment(workspace.write_experiment("http://h/v1")), ORDER_BLOCK + 8)
    jobs = list(pending_jobs(cells, DoneIndex(cells)))
    first_block = jobs[:ORDER_BLOCK * len(cells)]
    assert {j.seed for j in first_block} == set(range(ORDER_BLOCK))   # a run stopped here filled every cell
    assert {j.cell.key for j in first_block} == {c.key for c in cells}
    conversations = [(j.cell.scenario.id, j.cell.variant) for j in first_block]
    changes = sum(1 for a, b in zip(conversations, conversations[1:]) if a != b)
    assert changes == len({(c.scenario.id, c.variant) for c in cells}) - 1   # each conversation once per block


def test_same_input_gives_same_ids(workspace: Workspace) -> None:
    path = workspace.write_experiment("http://h/v1")
    assert all_ids(path, 6) == all_ids(path, 6)


def test_editing_one_scenario_changes_only_its_jobs(workspace: Workspace) -> None:
    path = workspace.write_experiment("http://h/v1")
    before = all_ids(path, 4)
    plain = workspace.scenarios / "plain.toml"
    plain.write_text(plain.read_text().replace("Acme Capital", "Apex Capital"))
    after = all_ids(path, 4)
    for key, job_id in before.items():
        assert (after[key] == job_id) == (key[0] != "plain"), key


def test_editing_a_rebuttal_changes_only_jobs_using_it(workspace: Workspace) -> None:
    path = workspace.write_experiment("http://h/v1")
    before = all_ids(path, 4)
    demo = workspace.scenarios / "demo.toml"
    demo.write_text(demo.read_text().replace("so no.", "so I decline."))  # rebuttal phrasing 1
    after = all_ids(path, 4)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {k for k in before if k[0] == "demo" and k[2] == "rebuttal" and k[4] % 2 == 1}


def test_model_params_are_part_of_the_id(workspace: Workspace) -> None:
    before = all_ids(workspace.write_experiment("http://h/v1"), 2)
    after = all_ids(workspace.write_experiment("http://other-host/v1", model_extra="params = { temperature = 0.0 }"), 2)
    assert not set(before.values()) & set(after.values())
    same_url_change = all_ids(workspace.write_experiment("http://other-host/v1"), 2)
    assert same_url_change == before  # the URL does not change what is sampled


def test_done_index_skips_only_matching_jobs(workspace: Workspace) -> None:
    cells = plan_cells(load_experiment(workspace.write_experiment("http://h/v1")), 3)
    done = DoneIndex(cells)
    first = cells[0]
    done.add(first.key, 1, first.job_id(1))
    done.add(first.key, 2, "stale-id-from-an-older-scenario-version")
    done.add(first.key, 99, first.job_id(99))  # beyond n
    assert done.count == 1
    pending = [(j.cell.key, j.seed) for j in pending_jobs(cells, done)]
    assert (first.key, 1) not in pending and (first.key, 2) in pending
    assert len(pending) == 3 * len(cells) - 1


def test_planning_is_lazy(workspace: Workspace) -> None:
    import tracemalloc

    cells = plan_cells(load_experiment(workspace.write_experiment("http://h/v1")), 20_000)
    tracemalloc.start()
    done = DoneIndex(cells)
    count = sum(1 for _ in pending_jobs(cells, done))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 9 * 20_000
    assert peak < 1_000_000  # bitmaps (~23 KB) + a few live jobs, not 180,000 job objects
