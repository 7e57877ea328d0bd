"""Generation probe statistics against a separate full forward pass and a naive float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from llm_reference import reference_stats

from torchwitness.controls.content import ContentPolicy
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records
from torchwitness.probes.generation import GenerationProbe
from torchwitness.run import Run

TOL = 1e-5


def _full_forward(model, sequences: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(sequences, attention_mask=attention_mask).logits


def _check_row(record: dict, logits: np.ndarray, tokens: np.ndarray) -> None:
    ref = reference_stats(logits, tokens)
    got = record["tokens"]
    for field in ("logprob", "entropy", "margin", "rank"):
        np.testing.assert_allclose(got[field], ref[field], atol=TOL, rtol=0, err_msg=field)
    s = record["stats"]
    assert s["length"] == len(tokens)
    assert s["logprob_sum"] == pytest.approx(sum(ref["logprob"]), abs=TOL * len(tokens))
    assert s["perplexity"] == pytest.approx(float(np.exp(-np.mean(ref["logprob"]))), rel=TOL)
    assert s["entropy_mean"] == pytest.approx(float(np.mean(ref["entropy"])), abs=TOL)
    assert s["margin_min"] == pytest.approx(min(ref["margin"]), abs=TOL)
    assert s["rank_max"] == max(ref["rank"])


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_raw_statistics_equal_a_full_forward(tmp_path, tiny_llama, sampled):
    prompt = torch.tensor([[1, 5, 9, 14, 3]])
    kwargs = {"do_sample": True, "temperature": 0.7, "top_k": 20} if sampled else {"do_sample": False}
    torch.manual_seed(1)
    with Run(tmp_path / "run") as run:
        probe = GenerationProbe(run, model_name="tiny-llama", keep_tokens=True)
        seq = probe.generate(tiny_llama, prompt, max_new_tokens=12, eos_token_id=None, **kwargs)
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"llm.generation"})]
    assert record["distribution"] == "raw" and record["stop_reason"] == "length"
    assert record["input_tokens"] == 5 and record["output_tokens"] == 12
    full = _full_forward(tiny_llama, seq)[0, 4:-1].numpy()
    _check_row(record, full, seq[0, 5:].numpy())
    if not sampled:
        assert record["tokens"]["rank"] == [1.0] * 12 and record["stats"]["top1_fraction"] == 1.0
    else:
        assert record["sampling"] == {"do_sample": True, "temperature": 0.7, "top_k": 20,
                                      "max_new_tokens": 12}


def test_processed_statistics_describe_the_sampling_distribution(tmp_path, tiny_llama):
    prompt = torch.tensor([[1, 7, 7, 2 + 40]])
    torch.manual_seed(2)
    with Run(tmp_path / "run") as run:
        probe = GenerationProbe(run, keep_tokens=True, distribution="processed")
        seq = probe.generate(tiny_llama, prompt, max_new_tokens=10, do_sample=True, temperature=0.5, top_k=5,
                             eos_token_id=None)
    record = probe.last[0]
    assert record["distribution"] == "processed"
    z = _full_forward(tiny_llama, seq)[0, 3:-1] / 0.5
    kth = z.topk(5, dim=-1).values[:, -1:]
    z = torch.where(z < kth, torch.tensor(float("-inf")), z)
    _check_row(record, z.numpy(), seq[0, 4:].numpy())
    assert max(record["tokens"]["rank"]) <= 5


def test_batch_with_left_padding_and_end_of_sequence(tmp_path, tiny_llama):
    prompt = torch.tensor([[0, 0, 1, 5, 9], [1, 4, 8, 15, 16]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with Run(tmp_path / "run") as run:
        probe = GenerationProbe(run, keep_tokens=True)
        free = probe.generate(tiny_llama, prompt, attention_mask=mask, max_new_tokens=8, do_sample=False,
                              eos_token_id=None)
        eos = int(free[0, 5 + 2])  # row 0's third generated token becomes the end-of-sequence token
        out = probe.generate(tiny_llama, prompt, attention_mask=mask, max_new_tokens=8, do_sample=False,
                             eos_token_id=eos, pad_token_id=0, return_dict_in_generate=True)
    assert hasattr(out, "sequences")
    seq = out.sequences
    full = _full_forward(tiny_llama, seq, torch.cat([mask, torch.ones_like(seq[:, 5:])], 1))
    for i, record in enumerate(probe.last):
        gen = seq[i, 5:].tolist()
        n = gen.index(eos) + 1 if eos in gen else len(gen)
        assert record["stop_reason"] == ("stop" if eos in gen else "length")
        assert record["input_tokens"] == int(mask[i].sum())
        _check_row(record, full[i, 4:4 + n].numpy(), seq[i, 5:5 + n].numpy())
    assert probe.last[0]["output_tokens"] == 3


def test_score_with_one_plain_forward_of_any_logits_module(tmp_path):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11))
    ids = torch.randint(0, 11, (2, 9))
    with Run(tmp_path / "run") as run:
        probe = GenerationProbe(run, keep_tokens=True)
        logits = probe.score(model, ids, prompt_length=3, prompt=["a", "b"], completion=["c", "d"])
    assert logits.shape == (2, 9, 11)
    for i, record in enumerate(probe.last):
        assert record["mode"] == "score" and record["stop_reason"] is None
        _check_row(record, logits[i, 2:-1].detach().numpy(), ids[i, 3:].numpy())
    with Run(tmp_path / "run2") as run, pytest.raises(InputError, match="prompt_length"):
        GenerationProbe(run).score(model, ids, prompt_length=9)


def test_token_ids_and_text_never_reach_the_record(tmp_path, tiny_llama):
    with Run(tmp_path / "run") as run:
        probe = GenerationProbe(run, content=ContentPolicy())
        probe.generate(tiny_llama, torch.tensor([[1, 5, 9]]), max_new_tokens=4, do_sample=False, eos_token_id=None)
    record = probe.last[0]
    assert "tokens" not in record
    assert set(record["prompt"]) == {"$personal"} and set(record["completion"]) == {"$personal"}


def test_beam_search_is_refused(tmp_path, tiny_llama):
    with Run(tmp_path / "run") as run, pytest.raises(InputError, match="beam"):
        GenerationProbe(run).generate(tiny_llama, torch.tensor([[1, 2]]), num_beams=2, max_new_tokens=2)


def test_chunked_statistics_equal_the_one_shot_computation():
    from torchwitness.probes.token_stats import token_statistics, token_statistics_chunked

    torch.manual_seed(4)
    logits = torch.randn(2, 11, 50) * 4
    tokens = torch.randint(0, 50, (2, 11))
    whole = token_statistics(logits, tokens)
    for chunked in (token_statistics_chunked(logits, tokens, max_elements=300),
                    token_statistics_chunked(list(logits.unbind(1)), tokens, max_elements=1)):
        for field, value in whole.items():
            torch.testing.assert_close(chunked[field], value, rtol=0, atol=0)


def test_generate_keeps_no_step_logits_and_leaves_the_model_as_it_was(tmp_path, tiny_llama):
    from transformers import LogitsProcessorList, MinLengthLogitsProcessor

    prompt = torch.tensor([[1, 5, 9]])
    user = LogitsProcessorList([MinLengthLogitsProcessor(6, eos_token_id=2)])
    with Run(tmp_path / "run") as run:
        for distribution in ("raw", "processed"):
            probe = GenerationProbe(run, distribution=distribution)
            out = probe.generate(tiny_llama, prompt, max_new_tokens=4, do_sample=False, logits_processor=user)
            assert isinstance(out, torch.Tensor) and out.shape == (1, 7)  # no dict unless asked for one
            assert probe.last[0]["output_tokens"] == 4
            assert not tiny_llama._forward_hooks and "_get_logits_processor" not in vars(tiny_llama)
            assert len(user) == 1  # the caller's list is not changed
        asked = probe.generate(tiny_llama, prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    assert asked.logits is None and asked.scores is None
