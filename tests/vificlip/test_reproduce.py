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
    assert "76.4 / 61.1 / 67.9" in md and "HMDB-51 51.3 / UCF-101 76.8" in md
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
    b2n = {f"{m}_b2n{x}{s}" for m in ("vificlip", "image_ft", "text_ft") for x in ("", "_novel")
           for s in ("", "_s2", "_s3")}
    # DATA= the K400 root itself: its rows only (bridge-and-prompt has no K400 base-to-novel row in the paper)
    assert {r.key for r in paper.rows} == {"zero_shot", "zero_shot_base", "zero_shot_novel", "image_ft", "text_ft",
                                           "vificlip", "vificlip_zs", "image_ft_zs", "text_ft_zs"} | b2n
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
        if r.checkpoint_of and r.key.startswith("prompting_b2n") and "novel" not in r.key:
            # bridge-and-prompt: prompts trained on the frozen ViFi-CLIP that the same seed fitted on the base classes
            assert (r.command, r.checkpoint_flag) == ("fit", "--model.init_args.init_from")
            assert r.checkpoint_of == r.key.replace("prompting", "vificlip")
        elif r.checkpoint_of:  # a trained model validated on other classes: same config and seed, other data
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


def _paper_layout(tmp_path, names=("kinetics400", "hmdb51", "ucf101", "ssv2", "kinetics600")):
    data = tmp_path / "datasets"
    for n in names:
        (data / n).mkdir(parents=True)
    return data


def test_paper_plan_chains_every_dataset_of_a_multi_root_data_folder(tmp_path) -> None:
    """DATA= with one root per dataset: base-to-novel on K400 / HMDB-51 / UCF-101 / SSv2 (3 published splits each),
    bridge-and-prompt started from the K400 32-frame ViFi-CLIP (init_from, not --ckpt_path), cross-dataset zero-shot
    on HMDB-51 / UCF-101 / K600 (3 splits each, the official list and label files), every row on its own root."""
    from benchmarks.reproduce import _cli_args
    from benchmarks.reproduce.vificlip import row_meta

    data = _paper_layout(tmp_path)
    plan = make_plan("paper", str(data))
    rows = {r.key: r for r in plan.rows}
    roots = {"k400": "kinetics400", "hmdb51": "hmdb51", "ucf101": "ucf101", "ssv2": "ssv2", "k600": "kinetics600"}
    for r in plan.rows:  # each row reads its dataset's root, never a synthetic stand-in
        assert f"--data.init_args.root={data / roots[row_meta(r.key)['dataset']]}" in r.overrides, r.key
        assert "--data.init_args.synth_if_missing=false" in r.overrides
        assert f"paper/{row_meta(r.key)['dataset']}/" in r.config or r.key == "vificlip_zs"
    zs = rows["vificlip_zs"]
    assert zs.command == "fit" and zs.config.endswith("k400/vit-b16_32f_zs-train-vificlip.yaml")
    prefix = {"hmdb51": "hmdb_51", "ucf101": "ucf_101", "ssv2": "ssv2_174", "k400": "kinetics_400"}
    for ds, pre in prefix.items():
        p = "" if ds == "k400" else f"{ds}_"
        for k, sfx in ((1, ""), (2, "_s2"), (3, "_s3")):
            fit, nov = rows[f"{p}vificlip_b2n{sfx}"], rows[f"{p}vificlip_b2n_novel{sfx}"]
            assert f"--data.init_args.train_file=fs_base_s{k}_train.txt" in fit.overrides
            assert f"--data.init_args.class_file={pre}_base_labels.csv" in fit.overrides
            assert nov.checkpoint_of == fit.key and nov.command == "validate"
            # the novel list and CSV come after the base ones: they win
            assert nov.overrides[-2:] == ["--data.init_args.val_file=novel_val.txt",
                                          f"--data.init_args.class_file={pre}_novel_labels.csv"]
            if ds == "k400":
                assert f"prompting_b2n{sfx}" not in rows
                continue
            pr = rows[f"{p}prompting_b2n{sfx}"]
            assert pr.command == "fit" and pr.checkpoint_of == "vificlip_zs"
            assert pr.checkpoint_flag == "--model.init_args.init_from"
            args = _cli_args(plan, pr, "parent", "/ck/zs.ckpt")
            assert args[args.index("--model.init_args.init_from") + 1] == "/ck/zs.ckpt" and "--ckpt_path" not in args
            assert rows[f"{p}prompting_b2n_novel{sfx}"].checkpoint_of == pr.key
        assert f"--data.init_args.class_file={pre}_base_labels.csv" in rows[f"{p}zero_shot_base"].overrides
    files = {"hmdb51": ("val{k}.txt", "hmdb_51_labels.csv"), "ucf101": ("val{k}.txt", "ucf_101_labels.csv"),
             "k600": ("ZS_split{k}_K600_eval.txt", "ZS_split{k}_K600.csv")}
    for m in ("vificlip", "image_ft", "text_ft"):  # the official zero-shot training of each method, 32 frames
        assert rows[f"{m}_zs"].config.endswith(f"k400/vit-b16_32f_zs-train-{m.replace('_', '-')}.yaml")
    for ds, (val, csv_) in files.items():
        for k, sfx in ((1, ""), (2, "_s2"), (3, "_s3")):
            for m in ("zero_shot", "vificlip", "image_ft", "text_ft"):
                r = rows[f"{ds}_{m}_heldout{sfx}"]
                assert r.command == "validate" and r.checkpoint_of == (None if m == "zero_shot" else f"{m}_zs")
                assert r.config.endswith(f"{ds}/vit-b16_32f_zs-eval-{m.replace('_', '-')}.yaml")
                assert f"--data.init_args.val_file={val.format(k=k)}" in r.overrides
                assert f"--data.init_args.class_file={csv_.format(k=k)}" in r.overrides
    for ds in ("hmdb51", "ucf101", "ssv2"):  # few-shot: fine-tuned from CLIP; prompted from the K400 ViFi-CLIP
        for k in (2, 4, 8, 16):
            ft, pr = rows[f"{ds}_vificlip_k{k}"], rows[f"{ds}_prompting_k{k}"]
            assert ft.command == pr.command == "fit" and ft.checkpoint_of is None
            assert (pr.checkpoint_of, pr.checkpoint_flag) == ("vificlip_zs", "--model.init_args.init_from")
            assert ft.config.endswith(f"{ds}/vit-b16_32f_k{k}-vificlip.yaml")
            assert pr.config.endswith(f"{ds}/vit-b16_32f_k{k}-prompting.yaml")
    assert len(plan.rows) == 165
    # without a K400 root nothing can start from a K400 model: no bridge-and-prompt, no trained cross-dataset row
    no_k400 = {r.key for r in make_plan("paper", str(_paper_layout(tmp_path / "b", ("hmdb51",)))).rows}
    assert no_k400 == {"hmdb51_zero_shot_base", "hmdb51_zero_shot_novel"} | {
        f"hmdb51_{m}_b2n{x}{s}" for m in ("vificlip", "image_ft", "text_ft") for x in ("", "_novel")
        for s in ("", "_s2", "_s3")} | {f"hmdb51_zero_shot_heldout{s}" for s in ("", "_s2", "_s3")} | {
        f"hmdb51_vificlip_k{k}" for k in (2, 4, 8, 16)}
    # --rows keeps what a row needs, transitively: a prompting novel row brings its fit and the K400 model
    kept = [r.key for r in make_plan("paper", str(data), only=["ucf101_prompting_b2n_novel_s2"]).rows]
    assert kept == ["vificlip_zs", "ucf101_prompting_b2n_s2", "ucf101_prompting_b2n_novel_s2"]


def test_paper_table_has_a_section_per_dataset_with_its_paper_figures(tmp_path) -> None:
    from benchmarks.reproduce import RowResult
    from benchmarks.reproduce.vificlip import markdown, table_rows

    plan = make_plan("paper", str(_paper_layout(tmp_path)))
    acc = {"hmdb51_vificlip_b2n": .70, "hmdb51_vificlip_b2n_novel": .50, "hmdb51_vificlip_b2n_s2": .80,
           "hmdb51_vificlip_b2n_novel_s2": .50, "ucf101_prompting_b2n": .90, "ucf101_prompting_b2n_novel": .75,
           "k600_vificlip_heldout": .70, "k600_vificlip_heldout_s2": .72, "k600_vificlip_heldout_s3": .74,
           "k600_zero_shot_heldout": .60, "vificlip_zs": .85, "ssv2_prompting_k2": .05, "ssv2_prompting_k16": .12}
    results = {k: RowResult(k, "finished", "h", {"val/acc1": v}) for k, v in acc.items()}
    lines = table_rows(plan, results)
    assert {(r["dataset"], r["seed"]) for r in lines if r["key"].startswith("k600_vificlip")} == {
        ("k600", 1), ("k600", 2), ("k600", 3)}
    md = markdown(lines, "# t").splitlines()
    hm = [2 * b * 50 / (b + 50) for b in (70, 80)]
    import statistics
    line = next(x for x in md if x.startswith("| HMDB-51: ViFi-CLIP"))
    assert "75.0 ± 7.1 (2)" in line and "50.0 ± 0.0 (2)" in line and f"{statistics.mean(hm):.1f}" in line
    assert line.endswith("| 73.8 / 53.3 / 61.9 |")
    assert next(x for x in md if x.startswith("| UCF-101: Bridge-and-prompt")).endswith("| 95.9 / 74.1 / 83.6 |")
    k600 = next(x for x in md if x.startswith("| Kinetics-600: ViFi-CLIP"))
    assert "72.0 ± 2.0 (3)" in k600 and k600.endswith("| 71.2 ± 1.0 |")
    assert any(x.startswith("| Kinetics-600: Vanilla zero-shot CLIP | 60.0") for x in md)
    assert any("`vificlip_zs` 85.0" in x for x in md)  # the model the cross-dataset rows evaluate
    few = next(x for x in md if x.startswith("| SSv2: Bridge-and-prompt"))
    assert few == "| SSv2: Bridge-and-prompt (deep V+L prompts) | 5.0 | - | - | 12.0 | 6.7 / 7.9 / 10.2 / 13.5 |"
    assert not any(x.startswith("| SSv2: ViFi-CLIP") for x in md)  # no result, no line


def test_paper_check_reads_an_evaluation_only_root(tmp_path) -> None:
    """A cross-dataset root has no training list: its rows are checked as what they run (validate), on their own
    split files; a missing split list is named before anything runs."""
    from common.data.synth.video_writers import write_kinetics400

    data = tmp_path / "datasets"
    root = write_kinetics400(data / "hmdb51", num_classes=3, num_per_class=1, val_per_class=1, frames=4, size=16,
                             progress=False)
    (root / "labels.csv").rename(root / "hmdb_51_labels.csv")
    for k in (1, 2, 3):
        (root / f"val{k}.txt").write_text((root / "val.txt").read_text())
    (root / "val.txt").unlink()
    (root / "train.txt").unlink()
    keys = [f"hmdb51_zero_shot_heldout{s}" for s in ("", "_s2", "_s3")]
    make_plan("paper", str(data), only=keys).check()  # passes: no train.txt needed
    (root / "val2.txt").unlink()
    with pytest.raises(DataCheckError, match="val2.txt"):
        make_plan("paper", str(data), only=keys).check()


def test_a_fit_row_starts_from_another_rows_checkpoint_through_init_from(tmp_path, mlflow_store, monkeypatch) -> None:
    """The paper chain's bridge-and-prompt rows: a ``fit`` whose ``checkpoint_of`` model arrives as
    ``--model.init_args.init_from`` (not ``--ckpt_path``, which would resume that run): the prompted model's frozen
    CLIP is the trained ViFi-CLIP's, tensor for tensor."""
    import torch

    from benchmarks.reproduce import Plan, Row, run_plan
    from benchmarks.reproduce.vificlip import SMOKE_WRITER
    from common.data.synth.video_writers import write_kinetics400

    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    root = write_kinetics400(tmp_path / "k400", progress=False, **SMOKE_WRITER)
    smoke = "vificlip/configs/smoke/k400/clip-tiny_4f_"
    fit = Row("vificlip_zs", "ViFi-CLIP", smoke + "vificlip.yaml", [f"--data.init_args.root={root}"])
    prompt = Row("prompting", "Bridge-and-prompt", smoke + "b2n-prompting.yaml", [f"--data.init_args.root={root}"],
                 checkpoint_of="vificlip_zs", checkpoint_flag="--model.init_args.init_from")
    _, res = run_plan(Plan("vificlip", "smoke", [fit, prompt], cli_module="vificlip", experiment="vificlip"),
                      log=lambda msg: None)
    assert res["vificlip_zs"].status == res["prompting"].status == "finished", res["prompting"].error
    command = tracking.client().get_run(res["prompting"].run_id).data.tags["command"]
    assert command.endswith(f"--model.init_args.init_from {res['vificlip_zs'].checkpoint}")
    assert "--ckpt_path" not in command
    trained = torch.load(res["vificlip_zs"].checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    prompted = torch.load(res["prompting"].checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    shared = [k for k in trained if k in prompted and ".visual." in k and k.endswith("weight")]
    assert shared and all(torch.equal(trained[k], prompted[k]) for k in shared)
    assert any(k not in trained for k in prompted)  # and the prompts themselves, which the ViFi-CLIP has not
