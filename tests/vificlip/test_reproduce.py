"""A smoke reproduction of ViFi-CLIP's table: ShapesWorld data (and the held-out class set) written by the driver,
zero-shot rows through ``validate``, trained rows through ``fit`` and their checkpoints validated on the novel classes
and on the held-out set, as MLflow children of one parent, the chance rows, resume; the paper preset's data check."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from benchmarks.reproduce import DataCheckError, state_dir
from benchmarks.reproduce.__main__ import main
from benchmarks.reproduce.vificlip import make_plan
from common import tracking
from common.data.kinetics import Kinetics400DataModule
from common.paths import project_root

ASKED = ["zero_shot", "zero_shot_base", "zero_shot_novel", "zero_shot_heldout", "vificlip_heldout",
         "vificlip_b2n_novel"]
#: the asked rows and the fit rows whose checkpoints two of them evaluate
ROWS = [*ASKED, "vificlip", "vificlip_b2n"]


def test_smoke_reproduction_writes_table_with_chance_row_and_tracks_rows(tmp_path, mlflow_store, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CVINW_DATA", raising=False)
    results = tmp_path / "results"
    args = ["vificlip", "--preset", "smoke", "--rows", ",".join(ASKED), "--results-dir", str(results)]
    assert main(args) == 0
    assert (tmp_path / "outputs" / "data" / "kinetics400-smoke").is_dir()
    # the held-out class set: the same layout, 12 classes, none of them (nor their colours or shapes) in training
    train = Kinetics400DataModule(root=str(tmp_path / "outputs" / "data" / "kinetics400-smoke")).class_names
    held = Kinetics400DataModule(root=str(tmp_path / "outputs" / "data" / "kinetics400-heldout-smoke")).class_names
    assert len(held) == 12 and not {w for n in held for w in n.split()} & {w for n in train for w in n.split()}

    md = (results / "vificlip_smoke.md").read_text()
    assert "| Chance (1 / classes) | - | 8.3 | - |" in md  # 12 ShapesWorld classes
    assert "| Chance (1 / classes) | 16.7 | 16.7 | 16.7 | - |" in md  # base / novel halves
    assert "| Chance (1 / classes) | 8.3 | - |" in md  # the held-out set's 12 classes
    assert "| ViFi-CLIP (both towers fine-tuned) |" in md and "83.9" in md  # the paper's figure beside ours
    assert "76.4 / 61.1 / 67.9" in md and "51.3 / 76.8" in md
    rows = {r["key"]: r for r in csv.DictReader((results / "vificlip_smoke.csv").open())}
    assert set(rows) == {*ROWS, "chance_all", "chance_base", "chance_novel", "chance_heldout"}
    assert float(rows["chance_all"]["top1"]) == pytest.approx(100 / 12, abs=1e-3)
    assert all(rows[k]["status"] == "finished" and 0.0 <= float(rows[k]["top1"]) <= 100.0 for k in ROWS)
    assert rows["zero_shot"]["command"] == "validate" and rows["vificlip"]["command"] == "fit"
    assert int(rows["zero_shot"]["trainable"]) == 0 < int(rows["vificlip"]["trainable"])
    assert rows["zero_shot_novel"]["classes"] == "novel"
    # the trained rows' checkpoints, evaluated: base-trained ViFi-CLIP on the novel classes, all-class ViFi-CLIP on
    # the held-out set; the base / novel / HM line is built from the base fit and its novel validation
    assert (rows["vificlip_b2n_novel"]["command"], rows["vificlip_b2n_novel"]["model_of"],
            rows["vificlip_b2n_novel"]["classes"]) == ("validate", "vificlip_b2n", "novel")
    assert (rows["vificlip_heldout"]["model_of"], rows["vificlip_heldout"]["classes"]) == ("vificlip", "heldout")
    assert rows["vificlip_b2n"]["classes"] == "base" and rows["vificlip_b2n"]["setting"] == "b2n"
    base, novel = float(rows["vificlip_b2n"]["top1"]), float(rows["vificlip_b2n_novel"]["top1"])
    hm = 2 * base * novel / (base + novel) if base + novel else 0.0
    assert f"| ViFi-CLIP (both towers fine-tuned) | {base:.1f} | {novel:.1f} | {hm:.1f} | 76.4 / 61.1 / 67.9 |" in md
    state = {k: json.loads((state_dir("vificlip", "smoke") / f"{k}.json").read_text()) for k in ROWS}
    assert state["vificlip_b2n"]["checkpoint"].endswith("last.ckpt")
    for row, model in (("vificlip_b2n_novel", "vificlip_b2n"), ("vificlip_heldout", "vificlip")):
        command = tracking.client().get_run(state[row]["run_id"]).data.tags["command"]
        assert command.startswith("python -m vificlip validate --config ")
        assert command.endswith(f"--ckpt_path {state[model]['checkpoint']}")

    parent = json.loads((state_dir("vificlip", "smoke") / "parent.json").read_text())["run_id"]
    client = tracking.client()
    assert client.get_run(parent).info.status == "FINISHED"
    children = tracking.child_runs(parent)
    assert len(children) == len(ROWS) and all(c.info.status == "FINISHED" for c in children)
    assert {f.path for f in client.list_artifacts(parent, "results")} == {
        "results/vificlip_smoke.md", "results/vificlip_smoke.csv"}
    assert "table/vificlip/top1" in client.get_run(parent).data.metrics

    assert main(args) == 0  # resume: nothing run again (the checkpoint rows too: their model did not change)
    assert f"{len(ROWS)} already done with the same config, 0 to run" in capsys.readouterr().out
    assert len(tracking.child_runs(parent)) == len(ROWS)


def test_plans_and_the_paper_data_check(tmp_path, mlflow_store, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(DataCheckError, match="needs the real Kinetics-400.*DATA="):
        make_plan("paper", None)
    assert main(["vificlip", "--preset", "paper"]) == 2
    assert "DATA=" in capsys.readouterr().err
    assert main(["vificlip", "--preset", "paper", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(DataCheckError, match="paper preset only"):
        make_plan("smoke", str(tmp_path))
    # an empty folder: the datamodule check refuses it before anything is trained or written
    (tmp_path / "k400").mkdir()
    paper = make_plan("paper", str(tmp_path / "k400"))
    b2n = {"vificlip_b2n", "vificlip_b2n_novel", "vificlip_b2n_s2", "vificlip_b2n_novel_s2", "vificlip_b2n_s3",
           "vificlip_b2n_novel_s3"}
    assert {r.key for r in paper.rows} == {"zero_shot", "zero_shot_base", "zero_shot_novel", "image_ft", "text_ft",
                                           "vificlip", "prompting_b2n"} | b2n
    assert all(f"--data.init_args.root={tmp_path / 'k400'}" in r.overrides for r in paper.rows)
    assert main(["vificlip", "--preset", "paper", "--data", str(tmp_path / "k400")]) == 2
    assert "DATA=" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "reproduce").exists()
    one_seed = ["zero_shot", "zero_shot_base", "zero_shot_novel", "zero_shot_heldout",
                "image_ft", "image_ft_heldout", "text_ft", "text_ft_heldout", "vificlip", "vificlip_heldout",
                "image_ft_b2n", "image_ft_b2n_novel", "text_ft_b2n", "text_ft_b2n_novel", "vificlip_b2n",
                "vificlip_b2n_novel", "prompting_b2n", "prompting_b2n_novel"]
    assert [r.key for r in make_plan("smoke").rows] == one_seed
    tiny = make_plan("tiny").rows
    assert [r.key for r in tiny[:len(one_seed)]] == one_seed  # the first seed of every row first
    assert {r.key for r in tiny} == set(one_seed) | {f"{k}_s{s}" for k in one_seed[4:] for s in (43, 44)}
    for r in tiny:
        if r.checkpoint_of:  # a trained model validated on other classes: same config and seed, other data
            fit = next(f for f in tiny if f.key == r.checkpoint_of)
            assert r.command == "validate" and r.config == fit.config and fit.command == "fit"
            assert [o for o in fit.overrides if o.startswith("--seed")] == [
                o for o in r.overrides if o.startswith("--seed")]
            assert any(o.endswith("class_split=novel") or "kinetics400-heldout" in o for o in r.overrides)
    # base-to-novel fits read their own b2n configs (trained on the base half at a lower lr than the full rows)
    def init_args(row_key: str) -> dict:
        row = next(r for r in tiny if r.key == row_key)
        return yaml.safe_load((project_root() / row.config).read_text())["model"]["init_args"]

    for m in ("image_ft", "text_ft", "vificlip"):
        b2n = next(r for r in tiny if r.key == f"{m}_b2n")
        assert b2n.config.endswith(f"_b2n-{m.replace('_', '-')}.yaml") and "--data.init_args.class_split=base" in \
            b2n.overrides
        assert init_args(f"{m}_b2n")["method"] == init_args(m)["method"] == m
        assert init_args(f"{m}_b2n")["lr"] < init_args(m)["lr"]
    assert next(r for r in tiny if r.key == "prompting_b2n").config.endswith("_b2n-prompting.yaml")


def test_paper_base_to_novel_rows_chain_the_published_splits(tmp_path) -> None:
    """Paper preset: ViFi-CLIP fitted on each published K400 base split (s1-s3) and each checkpoint validated on
    novel_val.txt with the novel class CSV; vanilla zero-shot on the base / novel lists; the table pairs base and
    novel per split (HM per split, mean ± std over the three)."""
    from benchmarks.reproduce import RowResult
    from benchmarks.reproduce.vificlip import markdown, table_rows

    (tmp_path / "k400").mkdir()
    plan = make_plan("paper", str(tmp_path / "k400"))
    rows = {r.key: r for r in plan.rows}
    novel = ["--data.init_args.val_file=novel_val.txt",
             "--data.init_args.class_file=kinetics_400_novel_labels.csv"]
    for k, (fit, ev) in enumerate([("vificlip_b2n", "vificlip_b2n_novel"), ("vificlip_b2n_s2", "vificlip_b2n_novel_s2"),
                                   ("vificlip_b2n_s3", "vificlip_b2n_novel_s3")], start=1):
        assert rows[fit].command == "fit" and rows[fit].config.endswith("k400/vit-b16_32f_b2n-vificlip.yaml")
        assert f"--data.init_args.train_file=fs_base_s{k}_train.txt" in rows[fit].overrides
        assert rows[ev].command == "validate" and rows[ev].checkpoint_of == fit
        assert all(o in rows[ev].overrides for o in novel) and rows[ev].config == rows[fit].config
    assert all(o in rows["zero_shot_novel"].overrides for o in novel)
    assert "--data.init_args.class_file=kinetics_400_base_labels.csv" in rows["zero_shot_base"].overrides
    acc = {"vificlip_b2n": 0.80, "vificlip_b2n_novel": 0.60, "vificlip_b2n_s2": 0.70, "vificlip_b2n_novel_s2": 0.60,
           "vificlip_b2n_s3": 0.90, "vificlip_b2n_novel_s3": 0.60}
    results = {k: RowResult(k, "finished", "h", {"val/acc1": v}) for k, v in acc.items()}
    lines = table_rows(plan, results)
    assert sorted(r["seed"] for r in lines if r["key"].startswith("vificlip_b2n")) == [1, 1, 2, 2, 3, 3]
    md = markdown(lines, "# t")
    hm = [2 * b * 60 / (b + 60) for b in (80, 70, 90)]
    import statistics
    cell = f"{statistics.mean(hm):.1f} ± {statistics.stdev(hm):.1f}"
    line = next(x for x in md.splitlines() if x.startswith("| ViFi-CLIP") and "76.4 / 61.1 / 67.9" in x)
    assert "80.0 ± 10.0" in line and "60.0 ± 0.0" in line and cell in line
