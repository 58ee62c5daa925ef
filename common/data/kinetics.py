"""Kinetics-400 (and any ``path label`` video list: HMDB-51, UCF-101, K600 splits) as a Lightning datamodule.

Two annotation formats, picked from the annotation file's suffix (``annotation: auto``) or named:

``list`` (ViFi-CLIP, ST-Adapter, mmaction2): one video per line, ``relative/path.mp4 <int label>`` separated by
  white space, the path relative to ``ROOT/<data_prefix>``; class names in an ``id,name`` CSV (``class_file``;
  ViFi-CLIP's ``labels/kinetics_400_labels.csv`` format). The same lists serve HMDB-51 and UCF-101.
``csv`` (the official Kinetics CSV): header ``label,youtube_id,time_start,time_end,split`` (extra columns such as
  ``is_cc`` ignored); the video file is ``csv_video_template`` formatted with those fields, by default
  ``{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` (the CVDF / ViFi-CLIP folder layout). Class index =
  position of the label in the sorted label names of the training CSV, unless an ``id,name`` ``class_file`` is
  given, whose ids win.

Default layout (what ``python -m common.data.synth kinetics400 --out ROOT`` writes)::

    ROOT/train/{youtube_id}_{start:06d}_{end:06d}.mp4
    ROOT/val/...
    ROOT/train.txt, ROOT/val.txt               "train/<file>.mp4 <label>" lines
    ROOT/labels.csv                            id,name
    ROOT/annotations/train.csv, val.csv        official CSV

The test split reads ``test_file`` (default: the validation file, as both papers test on K400 val).

Per-label folders: with a template such as ``{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``
the ``{label}`` field is the class name as the CSV writes it (``class_folder_style: original``, spaces kept), or
with spaces replaced by ``_`` (``class_folder_style: underscore``: the folders mmaction2's
``tools/data/kinetics400/rename_classnames.sh`` leaves, e.g. ``train/air_drumming/``; that script also turns
parentheses into ``-``, ``petting_animal_-not_cat-``, and both spellings are tried). A class folder that is missing
while its other spelling exists is named in the error with the option that fits.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any, Literal

from common.data.video_dataset import VideoDataModule, VideoSample

__all__ = ["Kinetics400DataModule", "read_class_csv", "read_video_list", "read_kinetics_csv"]

DEFAULT_CSV_TEMPLATE = "{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


def read_class_csv(path: Path) -> list[str]:
    """An ``id,name`` CSV (header required) -> names in id order; ids must be 0..K-1."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"id", "name"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a class CSV needs the header 'id,name', got {reader.fieldnames}")
        rows = {int(r["id"]): r["name"].strip() for r in reader}
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f"{path}: class ids must be 0..{len(rows) - 1} without gaps")
    return [rows[i] for i in range(len(rows))]


def read_video_list(path: Path) -> list[tuple[str, int]]:
    """A ``path label`` list -> ``[(relative path, label)]`` (blank lines ignored)."""
    out: list[tuple[str, int]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'relative/path label', got {line.strip()!r}")
            try:
                label = int(parts[-1])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: the label must be an integer, got {parts[-1]!r}") from None
            out.append((" ".join(parts[:-1]), label))
    return out


def read_kinetics_csv(path: Path) -> list[dict[str, Any]]:
    """The official Kinetics CSV -> rows with ``label, youtube_id, time_start, time_end, split`` (ints for times)."""
    need = {"label", "youtube_id", "time_start", "time_end", "split"}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise ValueError(f"{path}: the Kinetics CSV needs the columns {sorted(need)}, got {reader.fieldnames}")
        rows = []
        for r in reader:
            rows.append({**r, "label": r["label"].strip(), "time_start": int(float(r["time_start"])),
                         "time_end": int(float(r["time_end"]))})
    return rows


def _underscore_names(label: str) -> list[str]:
    """How mmaction2's ``rename_classnames.sh`` spells a class folder: its Kinetics-400 script replaces spaces by
    ``_`` and parentheses by ``-`` (``petting animal (not cat)`` -> ``petting_animal_-not_cat-``); its
    Kinetics-600/700 script replaces spaces only."""
    k400 = label.replace(" ", "_").replace("(", "-").replace(")", "-")
    spaces = label.replace(" ", "_")
    return [k400] if k400 == spaces else [k400, spaces]


class Kinetics400DataModule(VideoDataModule):
    """Kinetics-400 from ``path label`` lists or the official CSV (see the module docstring for the layout).

    Args:
        annotation: ``auto`` (by the suffix of ``train_file``: ``.csv`` = official CSV), ``list`` or ``csv``.
        train_file, val_file, test_file: annotation files, relative to ``root`` or absolute (``test_file`` None:
            the validation file).
        class_file: ``id,name`` class CSV (relative to root or absolute). Lists without one get names
            ``class 0`` ... (a warning: text classifiers need real names).
        data_prefix: folder the list paths are relative to, under root (default: root itself).
        csv_video_template: video path for CSV rows, relative to root.
        class_folder_style: how ``{label}`` is spelled in ``csv_video_template``: ``original`` (the CSV's class
            name) or ``underscore`` (mmaction2's renamed per-label folders: spaces -> ``_``, parentheses -> ``-``).
        **kwargs: see :class:`common.data.video_dataset.VideoDataModule`.
    """

    default_dirname = "kinetics400"
    synth_command = "kinetics400"
    dataset_name = "Kinetics-400"

    def __init__(
        self,
        root: str | None = None,
        annotation: Literal["auto", "list", "csv"] = "auto",
        train_file: str = "train.txt",
        val_file: str = "val.txt",
        test_file: str | None = None,
        class_file: str | None = "labels.csv",
        data_prefix: str = "",
        csv_video_template: str = DEFAULT_CSV_TEMPLATE,
        class_folder_style: Literal["original", "underscore"] = "original",
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, **kwargs)
        if annotation not in ("auto", "list", "csv"):
            raise ValueError(f"annotation must be auto, list or csv, got {annotation!r}")
        if annotation == "auto":
            annotation = "csv" if train_file.lower().endswith(".csv") else "list"
        self.annotation = annotation
        self.files = {"train": train_file, "val": val_file, "test": test_file or val_file}
        self.class_file = class_file
        self.data_prefix = data_prefix
        self.csv_video_template = csv_video_template
        if class_folder_style not in ("original", "underscore"):
            raise ValueError(f"class_folder_style must be original or underscore, got {class_folder_style!r}")
        self.class_folder_style = class_folder_style
        self._folder_exists: dict[str, bool] = {}

    def _path(self, name: str) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() else self.root / p

    def layout_help(self) -> str:
        return (
            "  list format: ROOT/train.txt, ROOT/val.txt ('relative/path.mp4 label' per line, paths relative to\n"
            "    ROOT/<data_prefix>) and ROOT/labels.csv ('id,name' header)\n"
            "  official CSV: ROOT/annotations/{train,val}.csv (label,youtube_id,time_start,time_end,split) with\n"
            f"    videos at ROOT/{self.csv_video_template}"
        )

    def annotation_file(self, split: str) -> str:
        return str(self._path(self.files[split]))

    def write_stand_in(self, out: Path, **kwargs: Any) -> Any:
        from common.data.synth.video_writers import write_kinetics400

        return write_kinetics400(out, **{"progress": False, **kwargs})

    def _video_path(self, row: dict[str, Any]) -> str:
        """The video of a CSV row; with ``class_folder_style: underscore`` the ``{label}`` spelling whose folder
        exists: mmaction2's Kinetics-400 script (spaces -> ``_``, parentheses -> ``-``) or its Kinetics-600/700
        script (spaces -> ``_`` only)."""
        if self.class_folder_style == "original":
            return str(self.root / self.csv_video_template.format(**row))
        candidates = [str(self.root / self.csv_video_template.format(**{**row, "label": name}))
                      for name in _underscore_names(row["label"])]
        for video in candidates:
            parent = os.path.dirname(video)
            if parent not in self._folder_exists:
                self._folder_exists[parent] = os.path.isdir(parent)
            if self._folder_exists[parent]:
                return video
        return candidates[0]

    def missing_video_hint(self, missing: list[VideoSample]) -> str:
        """Name a missing class folder whose other spelling exists, with the ``class_folder_style`` that fits."""
        if self.annotation != "csv" or "{label" not in self.csv_video_template:
            return ""
        gone = sorted({Path(s.path).parent for s in missing if not Path(s.path).parent.is_dir()})
        for folder in gone:
            if self.class_folder_style == "original":
                others, style = _underscore_names(folder.name), "underscore"
            else:
                others, style = [folder.name.replace("_", " ")], "original"
            for other in others:
                if other != folder.name and (folder.parent / other).is_dir():
                    return (f"Class folder {folder} does not exist but {folder.parent / other} does: set "
                            f"class_folder_style: {style}" + (" (mmaction2's renamed per-label folders)"
                                                              if style == "underscore" else ""))
        if gone:
            return (f"Class folder {gone[0]} does not exist; if the videos are in mmaction2's renamed per-label "
                    "folders (spaces replaced by _), set class_folder_style: underscore")
        return ""

    def load_class_names(self) -> list[str]:
        if self.class_file:
            cpath = self._path(self.class_file)
            if cpath.is_file():
                return read_class_csv(cpath)
            if self.annotation == "list":
                self.require_file(cpath, "class CSV (id,name)")
        if self.annotation == "csv":
            rows = read_kinetics_csv(self.require_file(self._path(self.files["train"]), "training CSV"))
            return sorted({r["label"] for r in rows if r["label"]})
        samples = read_video_list(self.require_file(self._path(self.files["train"]), "training list"))
        warnings.warn(f"{self.dataset_name}: no class CSV; class names are 'class <i>' (give class_file for "
                      "text classifiers)", stacklevel=2)
        return [f"class {i}" for i in range(max(lbl for _, lbl in samples) + 1)]

    def load_split(self, split: Literal["train", "val", "test"]) -> list[VideoSample]:
        names = self.all_class_names
        path = self.require_file(self._path(self.files[split]), f"{split} annotation file")
        samples: list[VideoSample] = []
        if self.annotation == "list":
            base = self.root / self.data_prefix
            for rel, label in read_video_list(path):
                video = str(base / rel)
                if not 0 <= label < len(names):
                    self.record_bad_label(video, f"label {label} outside 0..{len(names) - 1} in {path.name}")
                    continue
                samples.append(VideoSample(video, label))
        else:
            index = {n: i for i, n in enumerate(names)}
            for row in read_kinetics_csv(path):
                try:
                    video = self._video_path(row)
                except (KeyError, ValueError) as err:
                    raise ValueError(f"csv_video_template {self.csv_video_template!r} does not fit {path}: {err}") from err
                if row["label"] not in index:
                    self.record_bad_label(video, f"label {row['label']!r} not among the {len(names)} classes")
                    continue
                samples.append(VideoSample(video, index[row["label"]]))
        return samples
