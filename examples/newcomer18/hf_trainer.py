"""A real transformers.Trainer run (train + evaluate) of a tiny BERT built from a config, under torchwitness'
Hugging Face WitnessCallback.

    python examples/newcomer18/hf_trainer.py [--bug lr_100x] [--run runs/hf]

The bugs: lr_100x, a learning rate 100x the one this model trains well with (1e-1 instead of 1e-3);
shuffled_labels, training labels permuted apart from their sequences.
Written from docs/topics/frameworks.md and docs/guide/audits.md only.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers

from torchwitness.integrations.hf import WitnessCallback

BUGS = ("lr_100x", "shuffled_labels")


class Tokens(torch.utils.data.Dataset):
    """Sequences of 16 token ids; the label says whether the first token is one of the lower half of ids."""

    def __init__(self, n: int, seed: int, shuffle_labels: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 64, (n, 16), generator=g)
        self.labels = (self.ids[:, 0] < 32).long()
        if shuffle_labels:
            self.labels = self.labels[torch.randperm(n, generator=g)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def accuracy(prediction: transformers.EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())}


def main(run_dir: str | Path, bug: str | None = None, steps: int = 80, seed: int = 0):
    torch.manual_seed(seed)
    transformers.logging.set_verbosity_error()
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    lr = 1e-1 if bug == "lr_100x" else 1e-3
    out = Path(tempfile.mkdtemp(prefix="hf-out-"))
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=lr,
        eval_strategy="steps",
        eval_steps=40,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
    )
    callback = WitnessCallback(path=str(run_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = transformers.Trainer(
            model=transformers.BertForSequenceClassification(config),
            args=args,
            train_dataset=Tokens(2048, seed, shuffle_labels=bug == "shuffled_labels"),
            eval_dataset=Tokens(256, seed + 1),
            compute_metrics=accuracy,
            callbacks=[callback],
        )
        trainer.train()
        metrics = trainer.evaluate()  # recorded in a resumed session of the run
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=BUGS)
    parser.add_argument("--run", default=None)
    args = parser.parse_args()
    run_dir = args.run or Path(tempfile.mkdtemp()) / "run"
    print("eval:", main(run_dir, args.bug))
    print("run:", run_dir)
