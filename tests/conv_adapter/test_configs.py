"""The generated configs (paper, smoke, tiny) match their generator and name only arguments ConvAdapterModule and
the image-classification datamodule take."""

from __future__ import annotations

import inspect

import yaml

from common.data.image_classification import ImageClassificationDataModule
from conv_adapter.configs.generate import files
from conv_adapter.model import METHODS
from conv_adapter.module import ConvAdapterModule


def test_configs_match_the_generator_and_the_module():
    params = set(inspect.signature(ConvAdapterModule.__init__).parameters)
    data_params = set(inspect.signature(ImageClassificationDataModule.__init__).parameters)
    generated = files()
    # paper: five backbones x seven methods, VPT on the two Swins; smoke and tiny: two tiny backbones x seven
    assert len(generated) == 5 * 7 + 2 + 2 * 2 * 7
    for path, text in generated.items():
        assert path.is_file() and path.read_text() == text, f"{path}: run python -m conv_adapter.configs.generate"
        cfg = yaml.safe_load(text)
        assert cfg["model"]["class_path"] == "conv_adapter.module.ConvAdapterModule"
        args = cfg["model"]["init_args"]
        assert set(args) <= params and args["method"] in METHODS and args["method"] == path.stem
        assert cfg["data"]["class_path"] == "common.data.image_classification.ImageClassificationDataModule"
        assert set(cfg["data"]["init_args"]) <= data_params
