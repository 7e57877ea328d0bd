"""The model card loads with huggingface_hub (strict metadata, offline) and carries the evaluation figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchwitness.cli import app
from torchwitness.errors import InputError
from torchwitness.report.card import REQUIRED_SECTIONS, build_card, validate_card
from torchwitness.report.evidence import Evidence, get


def test_card_loads_and_holds_the_ledger_figures(rich_run: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    text = build_card(rich_run, intended_use="Research on income prediction; not for decisions about people.",
                      license="apache-2.0")
    path = tmp_path / "README.md"
    path.write_text(text)
    card = ModelCard.load(path, ignore_metadata_errors=False)
    validate_card(text)
    assert card.data.license == "apache-2.0" and card.data.datasets == ["uci-adult", "adult-train"]
    ev = Evidence.load(rich_run)
    results = {r.metric_type: r for r in card.data.eval_results}
    acc = ev.last("eval")
    assert results["accuracy"].metric_value == pytest.approx(get(acc, "metrics.accuracy"))
    assert results["accuracy"].metric_args == {"ledger_seq": acc["seq"]}
    fair = ev.last("fairness.eval")
    assert results["demographic_parity_difference"].metric_value == pytest.approx(
        get(fair, "views.0.disparities.0.estimate"))
    for heading in REQUIRED_SECTIONS:
        assert heading in card.text
    assert "sex=Female" in card.text and "interval" in card.text  # fairness slices with intervals
    assert "Training time" in card.text and card.data.to_dict()["torchwitness"]["run"] == ev.run_id


def test_the_model_record_gives_name_intended_use_limitations_and_licence(rich_run: Path) -> None:
    ev = Evidence.load(rich_run)
    model = ev.last("model")
    text = build_card(rich_run)  # no --intended-use, no --license: the model record states them
    validate_card(text)
    assert "# Model card: mlp-64-32" in text and "license: mit" in text
    assert f"Report tests only. [seq {model['seq']}]" in text
    assert f"Limitations, as the provider states them: Simulated figures. [seq {model['seq']}]" in text
    assert "Sequential(Linear, ReLU, Linear), 6,402 parameters" in text


def test_card_of_a_plain_run_says_what_is_missing(plain_run: Path) -> None:
    text = build_card(plain_run)
    validate_card(text)
    assert "Intended use is not recorded" in text and "No evidence in this run's ledger." in text


def test_a_run_that_names_its_data_only_in_a_datasheet(tmp_path: Path) -> None:
    import torchwitness as tw

    with tw.Run(tmp_path / "run", config={"stage": "governance"}) as run:
        run.record("data.datasheet", {"name": "adult.train", "rows": 10})
        run.log_eval({"accuracy": 0.8}, rows=10)
    card = build_card(tmp_path / "run")
    validate_card(card)
    assert "datasets:\n- adult.train" in card and "unknown" not in card


def test_validate_card_rejects_bad_metadata_and_missing_sections(rich_run: Path) -> None:
    text = build_card(rich_run)
    with pytest.raises(InputError, match="lacks sections"):
        validate_card(text.replace("## Evaluation", "## Results"))
    with pytest.raises(InputError, match="metadata"):
        validate_card(text.replace("    - type: accuracy\n", "    - kind: accuracy\n", 1))


def test_card_cli(rich_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "card.md"
    r = CliRunner().invoke(app, ["card", str(rich_run), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text().startswith("---\n")
