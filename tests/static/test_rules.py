"""Each static rule: a positive example it must flag and a close negative example it must leave alone."""

from __future__ import annotations

import textwrap

import pytest

from torchwitness.rules.static.context import FileContext
from torchwitness.rules.static.engine import static_rules

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"

CASES = {
    "TW601": (
        """
        model = nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches:
            opt.zero_grad(); F.mse_loss(model(x), y).backward(); opt.step()
        """,
        """
        torch.manual_seed(0)
        model = nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in batches:
            opt.zero_grad(); F.mse_loss(model(x), y).backward(); opt.step()
        """),
    "TW602": (
        "sd = torch.load('m.pt', weights_only=False)\n",
        "sd = torch.load('m.pt', weights_only=True)\n"),
    "TW603": (
        "import joblib\nclf = joblib.load('model.joblib')\n",
        "import numpy as np\narr = np.load('x.npy')\n"),
    "TW604": (
        "from torch.utils.data import DataLoader\ndl = DataLoader(ds, shuffle=True, num_workers=4)\n",
        "from torch.utils.data import DataLoader\n"
        "dl = DataLoader(ds, shuffle=True, num_workers=4, generator=torch.Generator().manual_seed(0))\n"),
    "TW605": (
        """
        def fit(model, opt, loader, val):
            for epoch in range(3):
                for x, y in loader:
                    opt.zero_grad(); F.mse_loss(model(x), y).backward(); opt.step()
                model.eval()
                evaluate(model, val)
        """,
        """
        def fit(model, opt, loader, val):
            for epoch in range(3):
                model.train()
                for x, y in loader:
                    opt.zero_grad(); F.mse_loss(model(x), y).backward(); opt.step()
                model.eval()
                evaluate(model, val)
        """),
    "TW606": (
        """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Linear(4, 4)
            def freeze(self):
                self.encoder.requires_grad = False
        """,
        """
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Linear(4, 4)
            def freeze(self):
                self.encoder.weight.requires_grad = False
                self.encoder.requires_grad_(False)
        """),
    "TW607": (
        "opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)\n",
        "opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)\n"
        "opt2 = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0)\n"),
    "TW608": (
        """
        def step(model, x, y):
            probs = F.softmax(model(x), dim=1)
            return F.cross_entropy(probs, y)
        """,
        """
        def step(model, x, y):
            probs = F.softmax(model(x), dim=1)
            probs = model(x)
            return F.cross_entropy(probs, y)
        """),
    "TW609": (
        """
        for x, y in loader:
            F.mse_loss(model(x), y).backward()
            opt.step()
        """,
        """
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.mse_loss(model(x), y).backward()
            opt.step()
        """),
    "TW610": (
        "torch.backends.cudnn.benchmark = True\n",
        "torch.backends.cudnn.benchmark = False\ntorch.backends.cudnn.deterministic = True\n"),
}


def fired(source: str, rule_id: str) -> list:
    ctx = FileContext.parse("case.py", HEADER + textwrap.dedent(source))
    (r,) = static_rules([rule_id])
    return list(r.check(ctx))


def test_every_static_rule_has_a_case():
    assert {r.id for r in static_rules()} == set(CASES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_positive_example_is_flagged(rule_id):
    found = fired(CASES[rule_id][0], rule_id)
    assert len(found) == 1, found
    f = found[0]
    assert f.rule_id == rule_id and f.location.startswith("case.py:") and f.details["line"] > 3


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_negative_example_is_clean(rule_id):
    assert fired(CASES[rule_id][1], rule_id) == []


@pytest.mark.parametrize("source, rule_id, n", [
    # the classic loop: eval() before the loop, never train()
    ("model.eval()\nfor x in d:\n    model(x).sum().backward()\n", "TW605", 1),
    # softmax layer at the end of a model trained with nn.CrossEntropyLoss
    ("m = nn.Sequential(nn.Linear(2, 3), nn.Softmax(dim=1))\nc = nn.CrossEntropyLoss()\n", "TW608", 1),
    ("loss = nn.CrossEntropyLoss()(logits.log_softmax(1), y)\n", "TW608", 1),
    ("for m in net.modules():\n    m.requires_grad = False\n", "TW606", 1),
    ("for p in net.parameters():\n    p.requires_grad = False\n", "TW606", 0),
    ("w = nn.Parameter(torch.zeros(2))\nw.requires_grad = False\n", "TW606", 0),
    ("torch.load('a.pt')\n", "TW602", 1),
    ("torch.load('a.pt', **kw)\n", "TW602", 0),
    ("from torch.optim import Adam\nAdam(ps, 1e-3, (0.9, 0.999), 1e-8, 0.01)\n", "TW607", 1),
    ("DataLoader(ds, num_workers=0)\n", "TW604", 0),
])
def test_variants(source, rule_id, n):
    assert len(fired(source, rule_id)) == n


def test_severity_tracks_how_unsafe_the_call_is():
    (explicit,) = fired("torch.load('a.pt', weights_only=False)\n", "TW602")
    (default,) = fired("torch.load('a.pt')\n", "TW602")
    assert str(explicit.severity) == "error" and str(default.severity) == "warn"
