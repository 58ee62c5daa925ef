"""The MaskCLIP Lightning module on ShapesWorld COCO-panoptic (random-init tiny CLIP and proposals, no network):
only RMA trains, a few steps lower the loss on a fixed batch, the panoptic evaluation writes COCO PNG + JSON that
the project's file evaluation scores exactly as the module's metric, and class names follow the data at
evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from common.data.coco_panoptic import COCOPanopticDataModule
from common.data.synth.coco_panoptic import write_coco_panoptic
from common.metrics.panoptic import evaluate_panoptic_files, rgb2id
from maskclip.module import MaskCLIPModule
from maskclip.rma import rma_parameter_count
from maskclip.visualize import write_panoptic_files


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "coco_panoptic"
    write_coco_panoptic(root, num_train=8, num_val=4, size=64, progress=False)
    return root


def _dm(root: Path, **kwargs: object) -> COCOPanopticDataModule:
    dm = COCOPanopticDataModule(str(root), synth_if_missing=False, train_classes="base", batch_size=4,
                                eval_batch_size=4, **kwargs)  # type: ignore[arg-type]
    dm.setup("fit")
    return dm


def _module(dm: COCOPanopticDataModule, **kwargs: object) -> MaskCLIPModule:
    torch.manual_seed(0)
    opts = {"clip_pretrained": None, "proposals": None, "rma_blocks": [1, 3], "num_points": 256, **kwargs}
    return MaskCLIPModule(dm.info, **opts)  # type: ignore[arg-type]


def test_only_rma_parameters_train(coco_root: Path) -> None:
    dm = _dm(coco_root)
    m = _module(dm)
    trainable = {n: p for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.vit.rma.") for n in trainable)
    visual = m.model.clip.visual
    width, patch = int(visual.conv1.out_channels), int(visual.conv1.kernel_size[0])
    assert sum(p.numel() for p in trainable.values()) == 2 * rma_parameter_count(width, patch)
    assert m.trainable_parameter_count()[0] == 2 * rma_parameter_count(width, patch)
    assert not any(p.requires_grad for p in m.proposals.parameters())
    assert not any(p.requires_grad for p in m.model.clip.parameters())
    m.train()
    assert not m.proposals.training and not m.model.clip.training and m.model.vit.rma.training
    opt = m.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in trainable.values()}
    for method in ("no_rma", "crop_classify"):
        base = _module(dm, method=method)
        assert base.trainable_parameter_count()[0] == 0
        with pytest.raises(ValueError, match="nothing to train"):
            base.configure_optimizers()


def test_training_steps_lower_the_loss_on_a_fixed_batch(coco_root: Path) -> None:
    dm = _dm(coco_root)
    m = _module(dm, lr=1e-2, warmup_steps=0, weight_decay=0.0)
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    targets = m.training_targets(batch["targets"])
    assert targets[0]["labels"].max() < len(dm.info["train_classes"])  # positions in the base-class list
    opt = m.configure_optimizers()["optimizer"]
    m.train()
    m._use_names("train")
    before = {n: p.detach().clone() for n, p in m.model.clip.named_parameters()}
    losses = []
    for _ in range(6):
        m.criterion.generator = torch.Generator().manual_seed(0)  # the same points every step
        out = m(batch["images"], with_no_object=True)
        assert out["pred_logits"].shape[-1] == len(dm.info["train_classes"]) + 1  # + "other"
        loss = m.criterion(out, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(torch.equal(p, before[n]) for n, p in m.model.clip.named_parameters())


def _write_predictions(m: MaskCLIPModule, dm: COCOPanopticDataModule, out: Path) -> Path:
    """The module's panoptic predictions of the validation split as a COCO panoptic prediction set."""
    names = m._all_names()
    cat_ids = dm.info["category_ids"]
    anns = []
    for batch in dm.val_dataloader():
        preds = m.predict_panoptic(batch["images"], batch["image_sizes"], [t["orig_size"] for t in batch["targets"]])
        for p, t in zip(preds, batch["targets"]):
            image = np.zeros((*t["orig_size"], 3), dtype=np.uint8)
            stem = Path(t["file_name"]).stem
            row = write_panoptic_files(out, stem, image, p["panoptic"], p["segments_info"], names)
            (out / row["panoptic"]).rename(out / f"{stem}.png")
            segs = json.loads((out / row["segments"]).read_text())["segments_info"]
            for s in segs:  # contiguous class -> the dataset's category id
                s["category_id"] = cat_ids[s["category_id"]]
            anns.append({"image_id": t["image_id"], "file_name": f"{stem}.png", "segments_info": segs})
    pred_json = out.parent / "pred.json"
    pred_json.write_text(json.dumps({"annotations": anns}))
    return pred_json


def test_panoptic_evaluation_writes_coco_files_that_score_as_the_module_metric(coco_root: Path, tmp_path: Path
                                                                               ) -> None:
    dm = _dm(coco_root)
    dm.setup("validate")
    m = _module(dm, method="no_rma", object_threshold=0.0, overlap_threshold=0.0).eval()  # keep every proposal
    for batch in dm.val_dataloader():
        preds = m.predict_panoptic(batch["images"], batch["image_sizes"], [t["orig_size"] for t in batch["targets"]])
        m.eval_metrics["val"]["panoptic"].update(preds, batch["targets"])
    ours = m.eval_metrics["val"]["panoptic"].summary()
    pred_json = _write_predictions(m, dm, tmp_path / "pred")
    gt_json = coco_root / "annotations" / "panoptic_val2017.json"
    files = evaluate_panoptic_files(gt_json, pred_json, coco_root / "annotations" / "panoptic_val2017",
                                    tmp_path / "pred", progress=False)
    assert sum(r["fp"] for r in files["per_class"]) > 0  # segments were predicted and scored
    for key in ("tp", "fp", "fn"):
        assert [r[key] for r in files["per_class"]] == [r[key] for r in ours["per_class"]]
    assert files["All"]["pq"] == pytest.approx(ours["All"]["pq"], abs=1e-9)
    # the PNG holds exactly the JSON's segments
    for png in (tmp_path / "pred").glob("*.png"):
        if png.name.endswith("_overlay.png"):
            continue
        from PIL import Image

        ids = set(np.unique(rgb2id(np.asarray(Image.open(png).convert("RGB"))))) - {0}
        seg = json.loads((tmp_path / "pred" / f"{png.stem}_segments.json").read_text())
        assert ids == {s["id"] for s in seg["segments_info"]}
    # the ground truth written the same way scores 100
    gt = json.loads(gt_json.read_text())
    anns = []
    for ann in gt["annotations"]:
        from PIL import Image

        ids = rgb2id(np.asarray(Image.open(coco_root / "annotations" / "panoptic_val2017" / ann["file_name"])
                                .convert("RGB")))
        segs = [{"id": s["id"], "category_id": s["category_id"]} for s in ann["segments_info"] if not s["iscrowd"]]
        keep = np.isin(ids, [s["id"] for s in segs])
        stem = Path(ann["file_name"]).stem
        write_panoptic_files(tmp_path / "gt_as_pred", stem, np.zeros((*ids.shape, 3), np.uint8),
                             np.where(keep, ids, 0), segs, [str(i) for i in range(200)])
        (tmp_path / "gt_as_pred" / f"{stem}_panoptic.png").rename(tmp_path / "gt_as_pred" / ann["file_name"])
        anns.append({"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs})
    (tmp_path / "gt_as_pred.json").write_text(json.dumps({"annotations": anns}))
    perfect = evaluate_panoptic_files(gt_json, tmp_path / "gt_as_pred.json",
                                      coco_root / "annotations" / "panoptic_val2017", tmp_path / "gt_as_pred",
                                      progress=False)
    assert perfect["All"]["pq"] == pytest.approx(100.0)


def test_validate_logs_pq_novel_and_miou_and_class_names_follow_the_data(coco_root: Path, tmp_path: Path,
                                                                         mlflow_store: str) -> None:
    dm = _dm(coco_root)
    m = _module(dm, method="no_rma", object_threshold=0.0, overlap_threshold=0.0, overlay_images=1)
    assert list(m.model.text.class_names) == [dm.info["class_names"][i] for i in dm.info["train_classes"]]
    # another vocabulary at evaluation: the same data with renamed categories
    other = tmp_path / "renamed"
    shutil.copytree(coco_root, other)
    cats = json.loads((other / "annotations" / "panoptic_categories.json").read_text())
    for c in cats:
        c["name"] = f"a {c['name']} thing"
    (other / "annotations" / "panoptic_categories.json").write_text(json.dumps(cats))
    dm2 = COCOPanopticDataModule(str(other), synth_if_missing=False, train_classes="base", batch_size=4)
    from common.loggers import CVMLFlowLogger

    logger = CVMLFlowLogger(experiment_name="maskclip-test", tracking_uri=mlflow_store)
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    metrics = trainer.validate(m, datamodule=dm2)[0]
    assert list(m.model.text.class_names) == [c["name"] for c in cats]  # all classes, renamed, at evaluation
    for key in ("val/pq", "val/sq", "val/rq", "val/pq_th", "val/pq_st", "val/pq_novel", "val/miou"):
        assert key in metrics and 0.0 <= metrics[key] <= 100.0
    assert metrics["val/count"] == 4.0
    from common import tracking

    arts = [f.path for f in tracking.client().list_artifacts(logger.run_id, "panoptic")]
    assert arts == ["panoptic/val_epoch0_0.png"]
    # names given on the module replace the data's (one per class), and a wrong count is refused
    renamed = [f"class {i}" for i in range(dm.info["num_classes"])]
    m2 = _module(dm, method="no_rma", class_names=renamed)
    m2._use_names("eval")
    assert list(m2.model.text.class_names) == renamed
    with pytest.raises(ValueError, match="one name per class"):
        _module(dm, method="no_rma", class_names=renamed[:3])
