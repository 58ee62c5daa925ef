"""ViFi-CLIP's model: temporal mean pooling and logits, the text-tower stepper, what each method trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.models import clip_text, load_clip
from vificlip.model import ViFiCLIP, temporal_mean_logits
from vificlip.prompts import PromptConfig

NAMES = ["red circle", "blue square", "green triangle"]


@pytest.fixture(scope="module")
def tiny_clip():
    """A random-init shapes-clip-tiny (built from its config; no download, no pretraining)."""
    torch.manual_seed(0)
    return load_clip("shapes-clip-tiny", None)


def fresh(tiny_clip):
    import copy

    return copy.deepcopy(tiny_clip.model), tiny_clip.tokenizer


def test_temporal_mean_logits_on_known_tensors() -> None:
    # 2 clips x 2 frames, E = 2: clip 0 frames (3, 0) and (1, 0) -> mean (2, 0) -> (1, 0);
    # clip 1 frames (0, 1) and (0, 3) -> (0, 2) -> (0, 1)
    frames = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    classes = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]), dim=-1)
    logits = temporal_mean_logits(frames, 2, classes, torch.tensor(100.0))
    s = 2 ** -0.5
    expected = 100.0 * torch.tensor([[1.0, s, 0.0], [0.0, s, 1.0]])
    torch.testing.assert_close(logits, expected)
    # the mean is taken before the normalisation (as the official code does), not of normalised frames
    frames = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    logits = temporal_mean_logits(frames, 2, F.normalize(torch.eye(2), dim=-1), torch.tensor(1.0))
    torch.testing.assert_close(logits, F.normalize(torch.tensor([[5.0, 0.5]]), dim=-1))


def test_text_stepper_equals_encode_text(tiny_clip) -> None:
    clip, tok = tiny_clip.model, tiny_clip.tokenizer
    tokens = tok(["a photo of a red circle.", "blue", "x x x x green triangle."])
    with torch.no_grad():
        torch.testing.assert_close(clip_text.forward(clip, tokens), clip.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_forward_is_framewise_clip_mean_cosine_times_logit_scale(tiny_clip) -> None:
    clip, tok = fresh(tiny_clip)
    model = ViFiCLIP(clip, tok, NAMES, "vificlip").eval()
    video = torch.randn(2, 3, 3, 64, 64)
    with torch.no_grad():
        logits = model(video)
        per_frame = torch.stack([clip.encode_image(video[:, t]) for t in range(3)], dim=1)  # (B, T, E)
        v = F.normalize(per_frame.mean(1), dim=-1)
        text = F.normalize(clip.encode_text(tok([f"a photo of a {n}." for n in NAMES])), dim=-1)
        expected = clip.logit_scale.exp() * v @ text.t()
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    # vanilla zero-shot CLIP uses the bare class names
    zs = ViFiCLIP(clip, tok, NAMES, "zero_shot")
    assert zs.text_head.prompts() == [NAMES]


EXPECTED = {
    "vificlip": lambda n: n.startswith("visual.") or n == "logit_scale" or (
        not n.startswith("visual.") and n != "token_embedding.weight"),
    "image_ft": lambda n: n.startswith("visual."),
    "text_ft": lambda n: not n.startswith("visual.") and n not in ("logit_scale", "token_embedding.weight"),
    "zero_shot": lambda n: False,
}


@pytest.mark.parametrize("method", list(EXPECTED))
def test_each_method_trains_exactly_its_set_and_the_rest_stays(method: str, tiny_clip) -> None:
    clip, tok = fresh(tiny_clip)
    model = ViFiCLIP(clip, tok, NAMES, method).train()
    names = {n for n, _ in clip.named_parameters()}
    trainable = {n for n, p in clip.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if EXPECTED[method](n)}
    assert all(not p.requires_grad for p in model.parameters() if all(p is not q for q in clip.parameters()))
    if not trainable:
        return
    before = {n: p.detach().clone() for n, p in clip.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    video, label = torch.randn(2, 2, 3, 64, 64), torch.tensor([0, 2])
    F.cross_entropy(model(video), label).backward()
    opt.step()
    changed = {n for n, p in clip.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert "visual.conv1.weight" in changed if method in ("vificlip", "image_ft") else "visual.conv1.weight" not in changed
    text_w = "transformer.resblocks.0.mlp.c_fc.weight"
    assert (text_w in changed) == (method in ("vificlip", "text_ft"))
    assert ("logit_scale" in changed) == (method == "vificlip")


def test_class_embeddings_cached_only_while_the_text_tower_is_frozen(tiny_clip) -> None:
    clip, tok = fresh(tiny_clip)
    frozen_text = ViFiCLIP(clip, tok, NAMES, "image_ft").train()
    assert frozen_text.text_head() [0] is frozen_text.text_head()[0]
    clip2, tok2 = fresh(tiny_clip)
    trained_text = ViFiCLIP(clip2, tok2, NAMES, "vificlip").train()
    emb = trained_text.text_head()[0]
    assert emb.requires_grad and emb is not trained_text.text_head()[0]
    trained_text.set_class_names(["yellow star", "red circle"])
    assert trained_text(torch.randn(1, 2, 3, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("method", ["vificlip", "prompting"])
def test_short_text_context_equals_the_full_context_pass(method: str, tiny_clip) -> None:
    clip, tok = fresh(tiny_clip)
    names = ["red circle", "a very long class name with many many words in it", "blue"]
    prompts = PromptConfig(3, 3, 2, 2) if method == "prompting" else None
    short = ViFiCLIP(clip, tok, names, method, prompts=prompts).train()
    full = ViFiCLIP(clip, tok, names, method, prompts=prompts, short_text_context=False).train()
    if method == "prompting":
        full.prompts = short.prompts
        full.text_encoder._prompts = short.prompts  # the same prompt tensors
    tokens = short.text_head._prompt_tokens()[0]
    cut = clip_text.shortest_context(clip, tokens)
    assert cut.shape[1] == int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]
    a, b = short.text_head.encode(), full.text_head.encode()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    ga = torch.autograd.grad(a.square().sum(), [p for p in short.parameters() if p.requires_grad][-1])[0]
    gb = torch.autograd.grad(b.square().sum(), [p for p in full.parameters() if p.requires_grad][-1])[0]
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
