"""Every table row trains exactly what it says, keeps the frozen Swin frozen, and adapters start as the identity."""

import copy
import re

import pytest
import torch

from common.peft.swin import swin_stage_features
from polyhistor.encoder import PeftConfig
from polyhistor.methods import METHODS
from polyhistor.network import PASCAL_OUTPUTS, build_network

from .conftest import make_tiny_swin

TASKS = list(PASCAL_OUTPUTS)
SWIN = r"encoder\.swin\."
DELTA = r"\.parametrizations\.(bias|relative_position_bias_table|weight)\.0\.deltas\.(semseg|human_parts|sal|normals)$"

#: method -> regexes the non-decoder trainable names must match (each must match at least one name)
EXPECTED = {
    "decoders_only": [],
    "mtl_full_ft": [SWIN + r"(?!.*parametrizations).*"],
    "single_task": [SWIN + r"(?!.*parametrizations).*"],
    "adapter": [r"encoder\.peft\.adapters\.s\d_b\d_(attn|mlp)\.per_task\.\w+\.(down|up)\.(weight|bias)$"],
    "vl_adapter": [r"encoder\.peft\.adapters\.s\d_b\d_(attn|mlp)\.module\.(down|up)\.(weight|bias)$"],
    "bitfit": [SWIN + r".*\.parametrizations\.(bias|relative_position_bias_table)\.0\.deltas\.\w+$"],
    "vpt_shallow": [r"encoder\.peft\.prompts\.prompts\.\w+\.0$"],
    "vpt_deep": [r"encoder\.peft\.prompts\.prompts\.\w+\.\d+$"],
    "compacter": [r"encoder\.peft\.phm_rules\.\w+$",
                  r"encoder\.peft\.compacter\.s\d_b\d_(attn|mlp)\.per_task\.\w+\.(down|up)\.(left|right|bias)$",
                  SWIN + r".*norm\w*" + DELTA],
    "compacter_pp": [r"encoder\.peft\.phm_rules\.\w+$",
                     r"encoder\.peft\.compacter\.s\d_b\d_mlp\.per_task\.\w+\.(down|up)\.(left|right|bias)$",
                     SWIN + r".*norm\w*" + DELTA],
    "lora": [r"encoder\.peft\.lora\.s\d_b\d_qkv\.per_task\.\w+\.lora_[AB]\.[01]$"],
    "hyperformer": [r"encoder\.peft\.hypernet\.(projector|generators)\..*"],
    "polyhistor": [r"encoder\.peft\.hypernet\.(projector|generators)\..*"],
    "polyhistor_lite": [r"encoder\.peft\.hypernet\.(projector|down|up|b_down|b_up|scale_\w+)\..*"],
    "conv_adapter": [r"encoder\.peft\.conv_adapters\.s\d_b\d_attn_grid\.per_task\.\w+\."
                     r"(conv[12]\.(weight|bias)|alpha)$"],
}
IDENTITY_AT_INIT = ["adapter", "vl_adapter", "compacter", "compacter_pp", "lora", "bitfit", "hyperformer",
                    "polyhistor", "polyhistor_lite"]


def _net(method: str, seed: int = 0):
    tasks = ["semseg"] if METHODS[method].single_task else TASKS
    return build_network(make_tiny_swin(seed), method, tasks, decoder_embed_dim=16).train(), tasks


def test_every_row_has_an_expectation():
    assert set(EXPECTED) == set(METHODS)


@pytest.mark.parametrize("method", list(METHODS))
def test_trainable_set_is_exactly_the_methods(method):
    net, _ = _net(method)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    assert any(n.startswith("decoders.") for n in names)
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith("decoders."))
    encoder_side = [n for n in names if not n.startswith("decoders.")]
    patterns = [re.compile(p) for p in EXPECTED[method]]
    unexplained = [n for n in encoder_side if not any(p.fullmatch(n) for p in patterns)]
    assert not unexplained, unexplained[:5]
    for p in patterns:
        assert any(p.fullmatch(n) for n in encoder_side), f"{method}: nothing trainable matches {p.pattern}"
    if METHODS[method].full_finetune:
        assert all(p.requires_grad for p in net.encoder.swin.parameters())


@pytest.mark.parametrize("method", [m for m in METHODS if not METHODS[m].full_finetune])
def test_one_optimiser_step_moves_peft_and_leaves_the_frozen_swin_alone(method):
    net, tasks = _net(method)
    frozen = {n: p.detach().clone() for n, p in net.encoder.swin.named_parameters() if not p.requires_grad}
    peft_before = {n: p.detach().clone() for n, p in net.named_parameters()
                   if p.requires_grad and not n.startswith("decoders.")}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    out = net(torch.randn(2, 3, 32, 32))
    sum(o.square().mean() for o in out.values()).backward()
    opt.step()
    for n, p in net.encoder.swin.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{method}: frozen {n} changed"
    if peft_before:
        moved = [n for n, p in net.named_parameters() if n in peft_before and not torch.equal(p, peft_before[n])]
        assert moved, f"{method}: no encoder-side PEFT parameter received an update"


@pytest.mark.parametrize("method", IDENTITY_AT_INIT)
def test_identity_adapters_leave_features_unchanged_at_init(method):
    swin = make_tiny_swin(3)
    reference = copy.deepcopy(swin)
    net = build_network(swin, method, TASKS, decoder_embed_dim=16).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = swin_stage_features(reference, x)
        for task in TASKS:
            got = net.encoder(x, task)
            assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected)), (method, task)


def test_vpt_rows_do_change_features():
    swin = make_tiny_swin(3)
    reference = copy.deepcopy(swin)
    x = torch.randn(2, 3, 32, 32)
    for method in ("vpt_shallow", "vpt_deep"):
        net = build_network(copy.deepcopy(swin), method, TASKS, decoder_embed_dim=16).eval()
        with torch.no_grad():
            assert not torch.allclose(net.encoder(x, "sal")[0], swin_stage_features(reference, x)[0])


def test_encoder_passes_per_row():
    """Task-agnostic rows: one pass of the batch; row-wise task-specific rows: one stacked pass of T x the batch
    (the patch embedding, which no PEFT touches, computed once for all T); the others (and stack_tasks=False): one
    pass per task."""
    batches, embeds = [], []
    for method, peft, expected in (("decoders_only", None, [1]), ("vl_adapter", None, [1]),
                                   ("adapter", None, [len(TASKS)]),
                                   ("adapter", PeftConfig(stack_tasks=False), [1] * len(TASKS)),
                                   ("bitfit", None, [1] * len(TASKS))):
        net = build_network(make_tiny_swin(0), method, TASKS, peft=peft, decoder_embed_dim=16).train()
        hooks = [net.encoder.swin.layers[0].register_forward_hook(lambda m, i, o: batches.append(i[0].shape[0])),
                 net.encoder.swin.patch_embed.register_forward_hook(lambda m, i, o: embeds.append(i[0].shape[0]))]
        batches.clear()
        embeds.clear()
        out = net(torch.randn(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        assert batches == expected, (method, peft)
        assert embeds == [1] * (1 if net.encoder.stacked or net.encoder.task_agnostic else len(TASKS)), method
        assert {t: o.shape for t, o in out.items()} == {t: (1, c, 32, 32) for t, c in PASCAL_OUTPUTS.items()}


STACKED = [("adapter", None), ("conv_adapter", None), ("lora", None), ("hyperformer", None), ("polyhistor", None),
           ("polyhistor_lite", None), ("compacter", None), ("compacter_pp", None),
           ("compacter", PeftConfig(compacter_tune_norms=False)), ("vpt_shallow", None), ("vpt_deep", None)]


@pytest.mark.parametrize(("method", "peft"), STACKED)
def test_stacked_pass_equals_one_pass_per_task(method, peft):
    """Features and gradients of the stacked pass match one pass per task, with PEFT weights that differ per task
    (random, not the identity init): adapters, prompts, and the per-task layer-norm deltas of the Compacter rows."""
    torch.manual_seed(1)
    net = build_network(make_tiny_swin(5), method, TASKS, peft=peft, decoder_embed_dim=16).eval()
    assert net.encoder.stacked
    trainable = {n: p for n, p in net.encoder.named_parameters() if p.requires_grad}
    assert trainable
    with torch.no_grad():
        for p in trainable.values():
            p.normal_(0.0, 0.2)
    x = torch.randn(3, 3, 32, 32)
    results = []
    for stacked in (True, False):
        net.zero_grad()
        net.encoder.stacked = stacked
        feats = net.encoder.forward_tasks(x)
        loss = sum(((i + 1) * f.sin()).mean() for i, t in enumerate(TASKS) for f in feats[t])
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainable.items() if p.grad is not None}
        results.append((feats, grads))
    (f_st, g_st), (f_seq, g_seq) = results
    for t in TASKS:
        assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(f_st[t], f_seq[t])), (method, t)
    assert not torch.allclose(f_seq["semseg"][-1], f_seq["sal"][-1], atol=1e-3)  # the tasks do differ
    assert g_st.keys() == g_seq.keys() and g_st
    for n in g_st:
        assert torch.allclose(g_st[n], g_seq[n], atol=1e-5, rtol=1e-3), (method, n)


def test_bitfit_does_not_stack():
    """BitFit's per-task relative-position bias tables act inside timm's window attention: one pass per task."""
    net, _ = _net("bitfit")
    assert not net.encoder.stacked
    with pytest.raises(RuntimeError, match="cannot run tasks stacked"):
        net.encoder.forward_stacked(torch.randn(1, 3, 32, 32), TASKS)
    # forcing it anyway fails loudly instead of using one task's biases for all
    with pytest.raises(RuntimeError, match="cannot run stacked"), net.encoder.ctx.use_stacked(TASKS):
        swin_stage_features(net.encoder.swin, torch.randn(4, 3, 32, 32))


def test_deepcopy_maps_hooks_onto_the_copy():
    swin = make_tiny_swin()
    reference = copy.deepcopy(swin)
    net = build_network(swin, "adapter", TASKS, decoder_embed_dim=16).eval()
    clone = copy.deepcopy(net)
    for p in clone.encoder.peft.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = swin_stage_features(reference, x)[-1]
        assert torch.allclose(net.encoder(x, "semseg")[-1], expected, atol=1e-6)  # the original's adapters
        assert not torch.allclose(clone.encoder(x, "semseg")[-1], expected)  # the copy runs its own


def test_slots_are_the_injection_points_of_the_swin():
    net = build_network(make_tiny_swin(), "hyperformer", TASKS, decoder_embed_dim=16)
    generated = net.encoder.peft["generated"]
    assert list(generated) == [f"s{s}_b{b}_{p}" for s in range(4) for b in range(2) for p in ("attn", "mlp")]
    assert generated.points["s2_b1_mlp"].name == "layers.2.blocks.1.mlp"
    assert [generated[k].slot for k in generated] == list(range(16))  # slot i = the bank's i-th generated adapter
    lora = build_network(make_tiny_swin(), "lora", TASKS, decoder_embed_dim=16).encoder.peft["lora"]
    assert lora.mode == "parallel" and lora.points["s3_b0_qkv"].out_dim == 3 * 64


def test_unknown_adapter_position_is_an_error():
    with pytest.raises(ValueError, match="adapter position must be one of"):
        build_network(make_tiny_swin(), "adapter", TASKS, peft=PeftConfig(adapter_positions=["ffn"]),
                      decoder_embed_dim=16)
