"""benchmarks/peers.py without Inspect: the ideal time, the table, reading Inspect's log, and
the one-line failure when the peers venv cannot be built (no network needed: pip is told to
use no index)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import peers


def test_ideal_is_bound_by_the_rate_limit_or_by_latency_at_the_concurrency() -> None:
    assert peers.ideal_s(1002) == pytest.approx(1002 * 60 / 3000)           # 3,000 rpm binds: 20.04 s
    assert peers.ideal_s(1002, rpm=60_000) == pytest.approx(1002 * 0.4 / 32)  # then 400 ms x 1002 / 32 does


def test_table_aligns_columns_and_gives_both_ratios() -> None:
    rows = [peers.Result("pipeline", 1002, 1002, 0, 20.8, 20.04, 19.9, 3.0, 1.8),
            peers.Result("inspect-ai", 1002, 1180, 178, 30.9, 20.04, 25.0, 24.3, 2.2)]
    lines = peers.table(rows).splitlines()
    assert lines[0].split()[:4] == ["tool", "requests", "429s", "wall"]
    assert lines[1].split() == ["pipeline", "1002", "0", "20.8", "20.0", "1.04x", "19.9", "0.99x", "3.0", "1.8"]
    assert lines[2].split()[5] == "1.54x"
    assert lines[1].index("1.04x") == lines[2].index("1.54x") == lines[0].index("wall/ideal")


def sample(start: str, end: str) -> dict[str, str]:
    return {"started_at": f"2026-11-24T08:16:{start}+00:00", "completed_at": f"2026-11-24T08:16:{end}+00:00"}


def test_inspect_span_runs_from_the_first_start_to_the_last_end() -> None:
    log = {"status": "success", "samples": [sample("21.250000", "22.000000"), sample("21.500000", "23.750000")]}
    assert peers.inspect_span(log, 2) == pytest.approx(2.5)
    with pytest.raises(peers.PeersError, match="'error' with 2 of 2"):
        peers.inspect_span({**log, "status": "error"}, 2)
    with pytest.raises(peers.PeersError, match="with 2 of 3 samples"):
        peers.inspect_span(log, 3)


def test_an_uninstallable_peers_venv_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    requirements = tmp_path / "peers-requirements.txt"
    requirements.write_text("--no-index\nno-such-package-for-the-peers-test==1.0\n")
    monkeypatch.setattr(peers, "PEERS_VENV", tmp_path / "venv")
    monkeypatch.setattr(peers, "REQUIREMENTS", requirements)
    assert peers.main(["--requests", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bench-peers: could not install peers-requirements.txt into ")
    assert "no-such-package-for-the-peers-test" in err[-1] and "install.log" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "venv" / ".installed").exists()   # the next run tries again
