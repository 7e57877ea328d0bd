"""Edits made in the same process by torchao, PEFT and torch.nn.utils.prune: certified, recorded, rolled back."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from torchwitness.certify import EditSession, certify, verify_certificate, weights_digest
from torchwitness.certify.external import effective_tensors
from torchwitness.errors import InputError

WINDOWS, LENGTH = 60, 32


@pytest.fixture
def llama():
    """A tiny Llama (nn.Linear layers, which torchao quantizes; GPT-2's Conv1D it does not)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def stream():
    return np.random.default_rng(0).integers(0, 97, WINDOWS * (LENGTH + 1))


def _lenient(**kw):
    return certify(policy="lenient", windows=WINDOWS, window_length=LENGTH, **kw)


def _policy(tmp_path, **margins):
    """The lenient policy with this test's evidence minimum and the given margins (to force a verdict)."""
    import json

    from torchwitness.certify import load_policy

    doc = load_policy("lenient").document
    doc.update(name="lenient-test", min_windows=WINDOWS, min_tokens=WINDOWS * LENGTH)
    for name, margin in margins.items():
        doc["metrics"][name] = margin
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("spec", ["torchao-int8", "torchao-int4-g16"])
def test_torchao_edit_is_certified_kept_and_its_digest_covers_the_integers(llama, stream, tmp_path, spec):
    pytest.importorskip("torchao")
    before = weights_digest(llama)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = certify(llama, edit=spec, tokens=stream, apply=True, windows=WINDOWS, window_length=LENGTH,
                         policy=_policy(tmp_path))
    assert result.verdict == "pass" and result.action == "kept", result.reasons
    weight = llama.model.layers[0].mlp.up_proj.weight
    assert type(weight).__module__.startswith("torchao")  # really torchao's quantized tensor, kept in place
    cert = result.certificate
    assert cert["subject"]["weights"] == weights_digest(llama) != before
    assert cert["subject"]["edit"]["method"] == "torchao weight-only"
    layers = {d["layer"]: d for d in cert["diagnostics"]["layers"]}
    assert 0 < layers["model.layers.0.mlp.up_proj.weight"]["weight_error"] < (0.02 if "8" in spec else 0.3)
    assert layers["model.embed_tokens.weight"]["weight_error"] == 0.0
    assert cert["diagnostics"]["invariants"]["violations"] == []
    verify_certificate(cert)


def test_torchao_edit_that_fails_is_rolled_back_to_the_original_parameters(llama, stream, tmp_path):
    pytest.importorskip("torchao")
    original = llama.model.layers[0].mlp.up_proj.weight
    before = weights_digest(llama)
    policy = _policy(tmp_path, kl={"max": 1e-12, "gate": True})
    result = certify(llama, edit="torchao-int4-g16", tokens=stream, apply=True, windows=WINDOWS,
                     window_length=LENGTH, policy=policy)
    assert result.verdict == "fail" and result.action == "rolled-back"
    assert llama.model.layers[0].mlp.up_proj.weight is original  # the caller's parameter objects are back
    assert weights_digest(llama) == before


def test_torch_prune_edit_is_seen_through_its_mask_and_rolled_back(llama, stream, tmp_path):
    before = weights_digest(llama)
    policy = _policy(tmp_path, kl={"max": 1e-12, "gate": True})
    result = certify(llama, edit="prune-l1-40", tokens=stream, apply=True, windows=WINDOWS, window_length=LENGTH,
                     policy=policy)
    assert result.verdict == "fail" and result.action == "rolled-back"
    layers = {d["layer"]: d for d in result.certificate["diagnostics"]["layers"]}
    assert "model.layers.0.mlp.up_proj.weight" in layers  # the effective weight, not weight_orig
    assert layers["model.layers.0.mlp.up_proj.weight"]["weight_error"] > 0.05
    assert result.certificate["diagnostics"]["invariants"]["violations"] == []
    up = llama.model.layers[0].mlp.up_proj
    assert not hasattr(up, "weight_orig") and not up._forward_pre_hooks  # reparametrisation and hook undone
    assert weights_digest(llama) == before


def test_torch_prune_subject_in_memory_keeps_forty_percent_zeros(llama, stream):
    import copy

    subject = copy.deepcopy(llama)
    from torch.nn.utils import prune

    prune.l1_unstructured(subject.model.layers[1].self_attn.q_proj, "weight", amount=0.4)
    eff = effective_tensors(subject)
    w = eff["model.layers.1.self_attn.q_proj.weight"][1]
    assert float((w == 0).float().mean()) == pytest.approx(0.4, abs=0.01)
    result = _lenient(baseline=llama, subject=subject, tokens=stream)
    assert result.certificate["diagnostics"]["layers"][0]["layer"] == "model.layers.1.self_attn.q_proj.weight"


def test_peft_lora_adapter_merged_in_place_and_rolled_back(llama, stream, tmp_path):
    import copy

    peft = pytest.importorskip("peft")
    torch.manual_seed(1)
    trained = peft.get_peft_model(copy.deepcopy(llama), peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():  # a small update, as fine-tuning leaves it, so the lenient policy can pass it
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.mul_(0.01)
    trained.save_pretrained(tmp_path / "adapter")
    before = weights_digest(llama)
    policy = _policy(tmp_path, kl={"max": 1e-12, "gate": True})
    result = certify(llama, edit=f"lora:{tmp_path / 'adapter'}", tokens=stream, apply=True, windows=WINDOWS,
                     window_length=LENGTH, policy=policy)
    assert result.action == "rolled-back" and weights_digest(llama) == before
    changed = {d["layer"] for d in result.certificate["diagnostics"]["layers"] if d["weight_error"] > 0}
    assert changed == {f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
    assert result.certificate["subject"]["edit"]["method"] == "peft LoRA merge_and_unload"
    assert all("lora" not in name for name, _ in llama.named_modules())  # no adapter layers left behind
    kept = certify(llama, edit=f"lora:{tmp_path / 'adapter'}", tokens=stream, apply=True, windows=WINDOWS,
                   window_length=LENGTH, policy=_policy(tmp_path))
    assert kept.action == "kept" and weights_digest(llama) == kept.certificate["subject"]["weights"] != before


def test_a_function_edit_is_certified_and_must_edit_in_place(llama, stream):
    def halve_mlp(model):
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.mul_(0.5)

    result = _lenient(baseline=llama, edit=halve_mlp, tokens=stream)
    assert result.certificate["subject"]["edit"]["spec"].endswith("halve_mlp")
    assert result.certificate["diagnostics"]["layers"][0]["layer"] == "model.layers.0.mlp.down_proj.weight"
    with pytest.raises(InputError, match="in place"):
        _lenient(baseline=llama, edit=lambda m: torch.nn.Linear(2, 2), tokens=stream)


def test_edit_session_undoes_module_swaps():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    first = model[0]
    digest = weights_digest(model)
    with EditSession(model):
        model[0] = torch.nn.Linear(4, 4)
        model.extra = torch.nn.Linear(2, 2)
    assert model[0] is first and not hasattr(model, "extra") and weights_digest(model) == digest


def test_torchao_on_gpt2_conv1d_says_why(tiny_lm):
    pytest.importorskip("torchao")
    with pytest.raises(InputError, match="Conv1D"):
        certify(tiny_lm.copy(), edit="torchao-int8", tokens=tiny_lm.held_out, windows=10, window_length=32)
