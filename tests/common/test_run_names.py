"""Run names: two runs started in the same second get different names (and folders), also across processes."""

import multiprocessing as mp
from pathlib import Path

from common.tracking import new_run_name

WHEN = 1_700_000_000.0  # every call below names a run started in this same second


def _claim(root: str, barrier, out) -> None:
    barrier.wait()  # both processes choose a name at the same moment
    out.put(new_run_name("tiny_adapter", Path(root), when=WHEN, claim=True))


def test_names_skip_existing_folders_and_claiming_creates_the_folder(tmp_path: Path):
    first = new_run_name("tiny_adapter", tmp_path, when=WHEN)
    assert not (tmp_path / first).exists()  # without claim nothing is created
    (tmp_path / first).mkdir()
    second = new_run_name("tiny_adapter", tmp_path, when=WHEN, claim=True)
    assert second == f"{first}-2" and (tmp_path / second).is_dir()
    assert new_run_name("tiny_adapter", tmp_path, when=WHEN, claim=True) == f"{first}-3"


def test_processes_started_in_the_same_second_never_share_a_name(tmp_path: Path):
    ctx = mp.get_context("fork")
    for _ in range(5):
        root = tmp_path / f"r{_}"
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_claim, args=(str(root), barrier, out)) for _ in range(4)]
        for p in procs:
            p.start()
        names = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert len(set(names)) == 4, names
        assert sorted(p.name for p in root.iterdir()) == sorted(names)
