"""QuickGELU for the CLIP weights trained with it (every OpenAI checkpoint), offline: no weight is downloaded.

open_clip builds ``ViT-B-16`` with ``nn.GELU`` even for ``pretrained="openai"`` (it only warns); OpenAI trained with
QuickGELU (``x * sigmoid(1.702 x)``), so :func:`common.models.load_clip` must switch, for the tags and for local
OpenAI checkpoints (TorchScript archives, or state dicts with OpenAI's extra keys).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from common.models import load_clip
from common.models.clip import OPENAI_EXTRA_KEYS, read_clip_checkpoint, tag_uses_quick_gelu

OPENAI_PAIRS = [(n, t) for n, t in open_clip.list_pretrained() if t == "openai"]


def activations(model: nn.Module) -> set[type]:
    """The MLP activation types used anywhere in the model."""
    return {type(m) for m in model.modules() if isinstance(m, nn.GELU | QuickGELU)}


def test_every_openai_tag_resolves_to_quick_gelu() -> None:
    assert ("ViT-B-16", "openai") in OPENAI_PAIRS and len(OPENAI_PAIRS) >= 10
    bad = [pair for pair in OPENAI_PAIRS if not tag_uses_quick_gelu(*pair)]
    assert not bad, f"OpenAI tags that would be built with nn.GELU: {bad}"
    # other tags trained with QuickGELU (open_clip's pretrained config says so) too; LAION-2B ViT-B-16 did not
    assert tag_uses_quick_gelu("ViT-B-32", "laion400m_e32")
    assert not tag_uses_quick_gelu("ViT-B-16", "laion2b_s34b_b88k")


@pytest.fixture()
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """open_clip.create_model replaced by a builder of the tiny CLIP with the same keyword arguments (no weights are
    fetched); returns the recorded calls."""
    real = open_clip.create_model
    calls: list[dict] = []

    def fake(name: str, pretrained: str | None = None, **kwargs: object) -> nn.Module:
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return real("shapes-clip-tiny", pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model", fake)
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda name: None)
    return calls


@pytest.mark.parametrize("name", [n for n, _ in OPENAI_PAIRS])
def test_load_clip_builds_every_openai_tag_with_quick_gelu(name: str, no_download: list[dict]) -> None:
    model = load_clip(name, "openai").model
    assert no_download[-1]["pretrained"] == "openai" and no_download[-1]["force_quick_gelu"] is True
    assert activations(model) == {QuickGELU}


def test_tags_without_quick_gelu_and_the_tiny_model_keep_gelu(no_download: list[dict]) -> None:
    assert activations(load_clip("ViT-B-16", "laion2b_s34b_b88k").model) == {nn.GELU}
    assert no_download[-1]["force_quick_gelu"] is False
    assert activations(load_clip("ViT-B-16", "openai", quick_gelu=False).model) == {nn.GELU}  # explicit wins


def test_shapes_clip_tiny_uses_gelu() -> None:
    assert activations(load_clip("shapes-clip-tiny", None).model) == {nn.GELU}
    assert activations(load_clip("shapes-clip-tiny", None, quick_gelu=True).model) == {QuickGELU}


@pytest.fixture(scope="module")
def openai_like() -> nn.Module:
    """A tiny CLIP with QuickGELU and random weights: what an OpenAI checkpoint holds, at tiny size."""
    torch.manual_seed(0)
    return load_clip("shapes-clip-tiny", None, quick_gelu=True).model


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    torch.manual_seed(1)
    img = torch.randn(2, 3, 64, 64)
    text = torch.randint(1, 1000, (2, 32))
    with torch.no_grad():
        return torch.allclose(a.encode_image(img), b.encode_image(img), atol=1e-6) and torch.allclose(
            a.encode_text(text), b.encode_text(text), atol=1e-6
        )


def test_local_torchscript_archive_is_openai_format(openai_like: nn.Module, tmp_path: Path) -> None:
    """OpenAI published its weights as TorchScript archives: such a file is recognised and built with QuickGELU."""
    f = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(
            openai_like, (torch.zeros(1, 3, 64, 64), torch.zeros(1, 32, dtype=torch.long)), check_trace=False
        )
    traced.save(str(f))
    assert read_clip_checkpoint(f).openai
    model = load_clip("shapes-clip-tiny", str(f)).model
    assert activations(model) == {QuickGELU}
    assert _same_outputs(model, openai_like)


def test_local_state_dict_with_openai_keys_is_openai_format(openai_like: nn.Module, tmp_path: Path) -> None:
    """The state dict of OpenAI's TorchScript model (saved with torch.save) carries its hyper-parameters as extra keys."""
    state = dict(openai_like.state_dict())
    state.update(
        {
            "input_resolution": torch.tensor(64),
            "context_length": torch.tensor(32),
            "vocab_size": torch.tensor(49408),
        }
    )
    f = tmp_path / "openai_state.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, f)
    ckpt = read_clip_checkpoint(f)
    assert ckpt.openai and not any(k in ckpt.state_dict for k in OPENAI_EXTRA_KEYS)
    model = load_clip("shapes-clip-tiny", str(f)).model
    assert activations(model) == {QuickGELU}
    assert _same_outputs(model, openai_like)


def test_plain_state_dict_keeps_the_architecture_unless_told(openai_like: nn.Module, tmp_path: Path) -> None:
    """A plain state dict (open_clip's layout, which OpenAI's ViT weights share) cannot be told apart: GELU, as the
    architecture says, unless quick_gelu=True says it holds OpenAI weights."""
    f = tmp_path / "plain.pt"
    torch.save(openai_like.state_dict(), f)
    assert not read_clip_checkpoint(f).openai
    assert activations(load_clip("shapes-clip-tiny", str(f)).model) == {nn.GELU}
    forced = load_clip("shapes-clip-tiny", str(f), quick_gelu=True).model
    assert activations(forced) == {QuickGELU}
    assert _same_outputs(forced, openai_like)
