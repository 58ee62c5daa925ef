"""CLIPTextClassifier: class embeddings of a CLIP text tower, cached while frozen, differentiable while trained."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.models import load_clip
from common.models.text_head import CLIPTextClassifier, text_tower_parameters

NAMES = ["red star", "blue circle", "green square"]
TEMPLATES = ("a {}", "a photo of a {}.")


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, object]:
    torch.manual_seed(0)
    model, tokenizer, _ = load_clip("shapes-clip-tiny", None)
    return model, tokenizer


@pytest.fixture()
def clip(tiny: tuple[nn.Module, object]) -> Iterator[tuple[nn.Module, object, list[int]]]:
    """A fresh copy of the tiny CLIP whose encode_text counts its calls."""
    model = copy.deepcopy(tiny[0])
    calls = [0]
    encode = model.encode_text

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls[0] += 1
        return encode(*args, **kwargs)

    model.encode_text = counting
    yield model, tiny[1], calls


def freeze_text(model: nn.Module, frozen: bool = True) -> None:
    for p in text_tower_parameters(model):
        p.requires_grad_(not frozen)


@torch.no_grad()
def by_hand(model: nn.Module, tokenizer: object, names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """CLIP's zero-shot classifier, one class at a time: normalise each prompt, average, normalise."""
    rows = []
    for name in names:
        e = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
        rows.append(F.normalize(e.mean(0), dim=-1))
    return torch.stack(rows)


def test_matches_a_hand_computation_with_encode_text(clip: tuple) -> None:
    model, tokenizer, _ = clip
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES)
    emb, scale = head()
    assert emb.shape == (3, 64)
    torch.testing.assert_close(emb, by_hand(model, tokenizer, NAMES, TEMPLATES), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(scale, model.logit_scale.exp())
    img = torch.randn(4, 64)
    expected = scale * F.normalize(img, dim=-1) @ emb.t()
    torch.testing.assert_close(head.logits(img), expected)


def test_templates_are_averaged_and_empty_means_bare_names(clip: tuple) -> None:
    model, tokenizer, _ = clip
    singles = [CLIPTextClassifier(model, tokenizer, NAMES, (t,))().embeddings for t in TEMPLATES]
    both = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES)().embeddings
    torch.testing.assert_close(both, F.normalize((singles[0] + singles[1]) / 2, dim=-1))
    assert not torch.allclose(singles[0], singles[1])
    with torch.no_grad():
        bare = F.normalize(model.encode_text(tokenizer(NAMES)), dim=-1)
    for templates in ((), ("{}",)):
        torch.testing.assert_close(CLIPTextClassifier(model, tokenizer, NAMES, templates)().embeddings, bare)


def test_cache_hit_while_the_text_tower_is_frozen(clip: tuple) -> None:
    model, tokenizer, calls = clip
    freeze_text(model)
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES).train()  # frozen: cached even in train mode
    first = head().embeddings
    assert calls[0] == len(TEMPLATES)
    for _ in range(3):
        assert head().embeddings is first
    assert calls[0] == len(TEMPLATES)  # no recompute
    assert not first.requires_grad


def test_cache_made_under_inference_mode_serves_a_training_step(clip: tuple) -> None:
    """Lightning validates under inference_mode; the cached embeddings must still enter autograd afterwards."""
    model, tokenizer, _ = clip
    freeze_text(model)
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES)
    with torch.inference_mode():
        cached = head().embeddings
    assert not cached.is_inference()
    img = torch.randn(2, 64, requires_grad=True)
    head.logits(img).sum().backward()
    assert img.grad is not None and head().embeddings is cached


def test_recomputed_with_gradients_while_the_text_tower_trains(clip: tuple) -> None:
    model, tokenizer, calls = clip
    freeze_text(model, False)
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES).train()
    a = head().embeddings
    b = head().embeddings
    assert a is not b and calls[0] == 2 * len(TEMPLATES)
    assert a.requires_grad
    torch.testing.assert_close(a, b)
    (head.logits(torch.randn(2, 64)) ** 2).sum().backward()
    assert model.token_embedding.weight.grad is not None and model.token_embedding.weight.grad.abs().sum() > 0
    assert model.text_projection.grad is not None and model.logit_scale.grad is not None
    assert model.visual.conv1.weight.grad is None


def test_eval_under_no_grad_caches_until_an_optimiser_step(clip: tuple) -> None:
    """A trainable text tower is cached within a validation loop (eval + no_grad) and recomputed after training."""
    model, tokenizer, calls = clip
    freeze_text(model, False)
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES)
    head.eval()
    with torch.no_grad():
        e1 = head().embeddings
        assert head().embeddings is e1 and calls[0] == len(TEMPLATES)
    with torch.enable_grad():  # eval mode but grad enabled: recomputed, differentiable
        assert head().embeddings.requires_grad
    head.train()
    opt = torch.optim.AdamW(text_tower_parameters(model), lr=1e-2)
    (head.logits(torch.randn(4, 64)) ** 2).sum().backward()
    opt.step()
    head.eval()
    with torch.no_grad():
        e2 = head().embeddings
    assert e2 is not e1 and not torch.allclose(e1, e2)
    torch.testing.assert_close(e2, by_hand(model, tokenizer, NAMES, TEMPLATES), atol=1e-5, rtol=1e-5)


def test_cache_follows_load_state_dict_and_dtype(clip: tuple, tiny: tuple) -> None:
    model, tokenizer, calls = clip
    freeze_text(model)
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES)
    e1 = head().embeddings
    torch.manual_seed(1)
    other = load_clip("shapes-clip-tiny", None).model
    model.load_state_dict(other.state_dict())
    e2 = head().embeddings
    assert e2 is not e1 and not torch.allclose(e1, e2)
    torch.testing.assert_close(e2, by_hand(other, tokenizer, NAMES, TEMPLATES), atol=1e-5, rtol=1e-5)
    assert head().embeddings is e2
    head.double()
    assert head().embeddings.dtype == torch.float64


def test_set_class_names_changes_shape_and_content(clip: tuple) -> None:
    model, tokenizer, calls = clip
    freeze_text(model)
    head = CLIPTextClassifier(model, tokenizer, NAMES, TEMPLATES)
    before = head().embeddings
    novel = ["yellow triangle", "blue circle", "purple hexagon", "red star", "orange cross"]
    head.set_class_names(novel)
    assert head.class_names == tuple(novel) and head.num_classes == 5
    after = head().embeddings
    assert after.shape == (5, 64)
    torch.testing.assert_close(after, by_hand(model, tokenizer, novel, TEMPLATES), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[1], before[1])  # blue circle, same row content at its new index
    torch.testing.assert_close(after[3], before[0])
    head.set_class_names(NAMES)
    torch.testing.assert_close(head().embeddings, before)


def test_register_clip_false_keeps_a_reference_only(clip: tuple) -> None:
    model, tokenizer, _ = clip
    owned = CLIPTextClassifier(model, tokenizer, NAMES)
    assert any(k.startswith("clip.") for k in owned.state_dict())
    ref = CLIPTextClassifier(model, tokenizer, NAMES, register_clip=False)
    assert ref.clip is model and len(ref.state_dict()) == 0 and not list(ref.parameters())
    torch.testing.assert_close(ref().embeddings, owned().embeddings)


def test_clear_errors(clip: tuple) -> None:
    model, tokenizer, _ = clip
    with pytest.raises(ValueError, match="exactly one"):
        CLIPTextClassifier(model, tokenizer, NAMES, ("a photo",))
    with pytest.raises(ValueError, match="empty"):
        CLIPTextClassifier(model, tokenizer, [])
    with pytest.raises(TypeError, match="one string"):
        CLIPTextClassifier(model, tokenizer, "red star")
    with pytest.raises(TypeError, match="encode_text"):
        CLIPTextClassifier(nn.Linear(2, 2), tokenizer, NAMES)
