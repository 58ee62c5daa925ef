"""Something-Something-v2 as a Lightning datamodule: webm videos with the official JSON annotations (or lists).

Official format (``annotation: json``, the default):

* ``labels.json``: ``{"<template without brackets>": "<class id>", ...}`` (174 classes; ids are strings);
* ``train.json`` / ``validation.json``: ``[{"id": "78687", "label": "holding potato next to vicks vaporub
  bottle", "template": "Holding [something] next to [something]", "placeholders": [...]}, ...]``; the class is
  the template with the square brackets removed, looked up in ``labels.json``;
* videos ``{id}.webm``.

The ``list`` format (``annotation: list``) reads ``path label`` lines (ViFi-CLIP's ``ssv2_splits``: ``74225.webm 140``)
relative to the video folder, with an ``id,name`` class CSV.

Default layout (what ``python -m common.data.synth ssv2 --out ROOT`` writes; the official archives unpack to it)::

    ROOT/20bn-something-something-v2/{id}.webm
    ROOT/labels/labels.json, train.json, validation.json     (official JSON)
    ROOT/train.txt, ROOT/val.txt, ROOT/labels.csv            ("{id}.webm <label>" lists, id,name classes)

mmaction2's names (``something-something-v2-labels.json`` ...) are found too. A video id listed twice with the same
class is warned and counted once as ``duplicate``; the same id with two different classes is an error naming both. The test split is the validation
split (the official test set has no public labels). SSv2 has left/right classes: never train it with a flip
(the ``randaugment_noflip`` recipe, ST-Adapter's, has none; a recipe with ``hflip > 0`` is refused unless ``allow_flip: true``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from common.data.kinetics import read_class_csv, read_video_list
from common.data.video_dataset import VideoDataModule, VideoSample

__all__ = ["SSv2DataModule", "template_to_label", "read_ssv2_labels", "read_ssv2_annotations"]

_JSON_NAMES = {
    "labels": ("labels.json", "something-something-v2-labels.json"),
    "train": ("train.json", "something-something-v2-train.json"),
    "val": ("validation.json", "something-something-v2-validation.json"),
}


def template_to_label(template: str) -> str:
    """``"Putting [something] onto [something]"`` -> ``"Putting something onto something"``."""
    return re.sub(r"[\[\]]", "", template).strip()


def read_ssv2_labels(path: Path) -> list[str]:
    """``labels.json`` -> class names in id order."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: labels.json must map class names to ids, got {type(data).__name__}")
    by_id = {int(v): k for k, v in data.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{path}: class ids must be 0..{len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))]


def read_ssv2_annotations(path: Path) -> list[dict[str, Any]]:
    """``train.json`` / ``validation.json`` -> the list of entries (each with ``id`` and ``template``)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list) or (data and not {"id", "template"} <= set(data[0])):
        raise ValueError(f"{path}: expected a list of {{'id', 'label', 'template', 'placeholders'}} entries")
    return data


class SSv2DataModule(VideoDataModule):
    """Something-Something-v2 (see the module docstring for the layout).

    Args:
        annotation: ``json`` (official) or ``list``.
        video_dir: folder of the ``{id}.webm`` files, relative to root (or absolute).
        annotation_dir: folder of the official JSON files, relative to root (searched, in order: this, root,
            ``annotations/``).
        train_file, val_file, class_file: list-format files, relative to root.
        video_ext: file extension of the videos.
        allow_flip: permit a transform with horizontal flips (wrong for SSv2's left/right classes).
        **kwargs: see :class:`common.data.video_dataset.VideoDataModule` (defaults here: ST-Adapter's SSv2 recipe
            and uniform segment sampling).
    """

    default_dirname = "ssv2"
    synth_command = "ssv2"
    dataset_name = "Something-Something-v2"
    check_duplicates = True

    def __init__(
        self,
        root: str | None = None,
        annotation: Literal["json", "list"] = "json",
        video_dir: str = "20bn-something-something-v2",
        annotation_dir: str = "labels",
        train_file: str = "train.txt",
        val_file: str = "val.txt",
        class_file: str = "labels.csv",
        video_ext: str = ".webm",
        allow_flip: bool = False,
        recipe: str = "randaugment_noflip",
        segment_style: Literal["tsn", "uniform"] = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, recipe=recipe, segment_style=segment_style, **kwargs)
        if annotation not in ("json", "list"):
            raise ValueError(f"annotation must be json or list, got {annotation!r}")
        if self.transform.hflip > 0 and not allow_flip:
            raise ValueError(
                f"SSv2 has left/right classes but the transform flips (hflip={self.transform.hflip}); set "
                "transform_args: {hflip: 0.0} (or allow_flip: true if you really mean it)"
            )
        self.annotation = annotation
        self.video_dir = video_dir
        self.annotation_dir = annotation_dir
        self.list_files = {"train": train_file, "val": val_file, "test": val_file}
        self.class_file = class_file
        self.video_ext = video_ext

    def _path(self, name: str) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() else self.root / p

    def layout_help(self) -> str:
        return (
            f"  ROOT/{self.video_dir}/{{id}}{self.video_ext}\n"
            f"  ROOT/{self.annotation_dir}/labels.json, train.json, validation.json (official JSON)\n"
            "  or, with annotation: list, ROOT/train.txt, ROOT/val.txt ('{id}.webm label', relative to the video\n"
            "  folder) and ROOT/labels.csv (id,name)"
        )

    def _json(self, kind: str) -> Path:
        if not self.root.is_dir():
            raise self.layout_error(f"dataset root {self.root} does not exist")
        for folder in (self.annotation_dir, "", "annotations"):
            for name in _JSON_NAMES[kind]:
                p = self._path(folder) / name
                if p.is_file():
                    return p
        raise self.layout_error(f"{_JSON_NAMES[kind][0]} not found in {self._path(self.annotation_dir)}")

    def annotation_file(self, split: str) -> str:
        if self.annotation == "list":
            return str(self._path(self.list_files[split]))
        return str(self._json("train" if split == "train" else "val"))

    def write_stand_in(self, out: Path, **kwargs: Any) -> Any:
        from common.data.synth.video_writers import write_ssv2

        return write_ssv2(out, **{"progress": False, **kwargs})

    def load_class_names(self) -> list[str]:
        if self.annotation == "json":
            return read_ssv2_labels(self._json("labels"))
        return read_class_csv(self.require_file(self._path(self.class_file), "class CSV (id,name)"))

    def load_split(self, split: Literal["train", "val", "test"]) -> list[VideoSample]:
        names = self.all_class_names
        videos = self._path(self.video_dir)
        samples: list[VideoSample] = []
        if self.annotation == "list":
            path = self.require_file(self._path(self.list_files[split]), f"{split} list")
            for rel, label in read_video_list(path):
                video = str(videos / rel)
                if not 0 <= label < len(names):
                    self.record_bad_label(video, f"label {label} outside 0..{len(names) - 1} in {path.name}")
                    continue
                samples.append(VideoSample(video, label))
            return samples
        path = self._json("train" if split == "train" else "val")
        index = {n: i for i, n in enumerate(names)}
        for entry in read_ssv2_annotations(path):
            video = str(videos / f"{entry['id']}{self.video_ext}")
            label = template_to_label(str(entry.get("template", "")))
            if label not in index:
                self.record_bad_label(video, f"template {entry.get('template')!r} not in labels.json")
                continue
            samples.append(VideoSample(video, index[label]))
        return samples
