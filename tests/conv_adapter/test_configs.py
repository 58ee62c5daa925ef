"""The generated paper configs match their generator and name only arguments ConvAdapterModule takes."""

from __future__ import annotations

import inspect

import yaml

from conv_adapter.configs.generate import files
from conv_adapter.model import METHODS
from conv_adapter.module import ConvAdapterModule


def test_configs_match_the_generator_and_the_module():
    params = set(inspect.signature(ConvAdapterModule.__init__).parameters)
    generated = files()
    assert len(generated) == 5 * 7 + 2  # five backbones x seven methods, VPT on the two Swins
    for path, text in generated.items():
        assert path.is_file() and path.read_text() == text, f"{path}: run python -m conv_adapter.configs.generate"
        cfg = yaml.safe_load(text)
        assert cfg["model"]["class_path"] == "conv_adapter.module.ConvAdapterModule"
        args = cfg["model"]["init_args"]
        assert set(args) <= params and args["method"] in METHODS and args["method"] == path.stem
