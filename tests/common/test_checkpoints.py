"""A truncated checkpoint is an error that names the file and the checkpoints to resume from instead."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from common.checkpoints import CorruptCheckpointError, check_checkpoint, checkpoint_problem


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.layer(batch[0]).pow(2).mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A real run folder: best-*.ckpt and last.ckpt written by Lightning's ModelCheckpoint, as the CLI sets it up."""
    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "run"), filename="best-{epoch}-{step}", monitor="val/loss",
                           save_last=True, save_top_k=1, auto_insert_metric_name=False)
    pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[ckpt]).fit(_Tiny(), loader, loader)
    return tmp_path / "run"


def test_truncated_last_ckpt_names_the_file_and_the_checkpoints_to_resume_from(run_dir: Path) -> None:
    last = run_dir / "last.ckpt"
    best = next(run_dir.glob("best-*.ckpt"))
    check_checkpoint(last)  # whole: fine
    data = last.read_bytes()
    last.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(Exception) as torch_err:  # what a user got before: no file name
        torch.load(last, weights_only=False)
    assert str(last) not in str(torch_err.value)
    with pytest.raises(CorruptCheckpointError) as err:
        check_checkpoint(str(last))
    msg = str(err.value)
    assert f"checkpoint {last} cannot be read" in msg and "cut short" in msg
    assert f"--ckpt_path {best}" in msg  # the whole checkpoint of the same run
    # with no other whole checkpoint in the folder, the message says so
    best.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"(?s)No other whole checkpoint is in .*without --ckpt_path"):
        check_checkpoint(last)
    with pytest.raises(CorruptCheckpointError, match="empty"):
        check_checkpoint(best)


def test_what_is_not_judged(tmp_path: Path) -> None:
    check_checkpoint(None)
    check_checkpoint("last")  # Lightning's keywords and missing paths are resolved elsewhere
    check_checkpoint(tmp_path / "missing.ckpt")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(legacy) is None
    plain_zip = tmp_path / "notes.zip"
    import zipfile

    with zipfile.ZipFile(plain_zip, "w") as zf:
        zf.writestr("a.txt", "hello")
    assert "not a torch checkpoint" in (checkpoint_problem(plain_zip) or "")


def test_the_cli_checks_ckpt_path_before_lightning_loads_it(tmp_path: Path, mlflow_store: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m <paper> validate --ckpt_path <cut file>``: the project's message, not torch's zip error."""
    from common.cli import run

    monkeypatch.setenv("CVINW_OUTPUTS", str(tmp_path / "outputs"))
    toy = Path(__file__).parents[1] / "helpers" / "toy.yaml"
    fit = run(["fit", "--config", str(toy), "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
    last = Path(fit["last_model_path"])
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    monkeypatch.delenv("CVINW_RUN_NAME", raising=False)
    with pytest.raises(CorruptCheckpointError, match="cut.ckpt cannot be read"):
        run(["validate", "--config", str(toy), "--ckpt_path", str(cut), "--trainer.enable_progress_bar=false"])
