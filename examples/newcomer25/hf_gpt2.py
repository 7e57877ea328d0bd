"""Step 3b: a tiny GPT-2 built from a config, trained by transformers.Trainer with the documented callback."""
import sys
import warnings

import torch
import transformers
from nc25_data import DATA

from torchwitness.integrations.hf import WitnessCallback
from torchwitness.report.from_run import run_findings


class CharWindows(torch.utils.data.Dataset):
    """Character-level windows of Tiny Shakespeare; the model shifts labels itself (HF convention)."""

    def __init__(self, n, length=32, corrupt_labels=False):
        text = (DATA / "tinyshakespeare" / "input.txt").read_text()[:200_000]
        self.vocab = sorted(set(text))
        ids = torch.tensor([self.vocab.index(c) for c in text[: n * length + 1]])
        self.ids = ids[: n * length].view(n, length)
        self.corrupt = corrupt_labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        labels = ids.clone()
        if self.corrupt:     # planted: labels from a different window
            labels = self.ids[(i * 7 + 3) % len(self.ids)].clone()
        return {"input_ids": ids, "labels": labels}


def train(run_dir, out_dir, corrupt=False, steps=30):
    torch.manual_seed(0)
    ds = CharWindows(512, corrupt_labels=corrupt)
    config = transformers.GPT2Config(vocab_size=len(ds.vocab), n_positions=32, n_embd=32, n_layer=2, n_head=2)
    args = transformers.TrainingArguments(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=16,
                                          learning_rate=3e-3, save_strategy="no", report_to=[], use_cpu=True,
                                          disable_tqdm=True, logging_steps=10)
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=ds,
                                       callbacks=[WitnessCallback(path=run_dir)])
        trainer.train()
    return run_findings(run_dir)


if __name__ == "__main__":
    for f in train(sys.argv[1], sys.argv[1] + "-out", corrupt=len(sys.argv) > 2):
        print(f.rule_id, f.severity.name, f.first_step, f.location, "|", f.message)
        for c in f.consequences:
            print("   ->", c.rule_id, c.message)
