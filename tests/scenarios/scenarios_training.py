"""Silent training-loop and optimizer bugs: the loss curve, gradients, the optimizer and its coverage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _kit import WATCH, blobs, bug, fit, healthy, mlp, regression
from torch import nn

import torchwitness as tw


@bug("TW101")
def sqrt_of_negative_in_loss(run: tw.Run) -> None:
    x, y = regression()
    model = mlp(8, 16, 1)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    watch = run.watch(model, opt, every_n_steps=10, first_steps=3)
    for _ in range(4):
        opt.zero_grad()
        loss = torch.sqrt(((model(x[:32]).squeeze(1) - y[:32]) ** 2).mean() - 10.0)  # "RMSE with offset"
        watch.observe(loss=loss)
        loss.backward()
        opt.step()


@bug("TW103")
def unscaled_regression_targets(run: tw.Run) -> None:
    x, y = regression()
    model = mlp(8, 16, 1)
    fit(run, model, torch.optim.SGD(model.parameters(), 1e-6), nn.MSELoss(), x, (y * 1e4).unsqueeze(1), steps=5)


@bug("TW104")
def deep_sigmoid_stack(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp(10, 32, 3, act=nn.Sigmoid, depth=14)
    fit(run, model, torch.optim.SGD(model.parameters(), 0.1), nn.CrossEntropyLoss(), x, y, steps=5)


class _ExpHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.fc(x) * 200)  # an "energy" head that overflows


@bug("TW105")
def exp_overflow_in_head(run: tw.Run) -> None:
    x, y = blobs()
    model = nn.Sequential(nn.Linear(10, 10), _ExpHead())
    fit(run, model, torch.optim.SGD(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW106")
def numpy_float64_model(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp().double()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x.double(), y, steps=3)


@bug("TW107")
def bfloat16_weights_small_lr(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp().to(torch.bfloat16)
    fit(run, model, torch.optim.SGD(model.parameters(), 1e-4), nn.CrossEntropyLoss(), x.to(torch.bfloat16), y,
        steps=4)


@bug("TW307", "TW108")
def learning_rate_far_too_high(run: tw.Run) -> None:
    x, y = regression()
    model = mlp(8, 32, 1)
    fit(run, model, torch.optim.SGD(model.parameters(), 0.5), nn.MSELoss(), x, y.unsqueeze(1), steps=20)


@bug("TW109")
def labels_shuffled_apart_from_inputs(run: tw.Run) -> None:
    x, y = blobs(n=1024)
    y = y[torch.randperm(len(y))]  # shuffled separately from x
    model = mlp()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=60)


class _DetachedEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).detach())  # meant for logging, cuts the graph


@bug("TW110")
def stray_detach(run: tw.Run) -> None:
    x, y = blobs()
    model = _DetachedEncoder()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=5)


@bug("TW111", "TW403")
def dead_relu_layer(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-20.0)  # every unit below zero for every input
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=12)


@bug("TW301")
def optimizer_over_part_of_model(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    fit(run, model, torch.optim.Adam(model[0].parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW301")
def head_replaced_after_optimizer(run: tw.Run) -> None:
    x, y = blobs(c=5)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model[2] = nn.Linear(32, 5)  # new task head, optimizer still holds the old one
    fit(run, model, opt, nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW302")
def adam_with_l2(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-2), nn.CrossEntropyLoss(), x, y,
        steps=3)


@bug("TW304")
def zero_grad_missing(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 1e-2)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, every_n_steps=10, first_steps=3)
    for step in range(6):
        idx = slice(step * 32, step * 32 + 32)
        crit(model(x[idx]), y[idx]).backward()
        opt.step()


@bug("TW305")
def freeze_by_attribute(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    model[0].requires_grad = False  # meant to freeze the first layer
    fit(run, model, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW306", tolerated=("TW214",))  # x[:32] every step: the same batch too
def frozen_layer_keeps_moving_with_momentum(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, every_n_steps=10, first_steps=6)
    for step in range(8):
        if step == 2:
            model[0].requires_grad_(False)  # freeze, but the zeroed .grad and the momentum buffer stay
        opt.zero_grad(set_to_none=False)
        crit(model(x[:32]), y[:32]).backward()
        opt.step()


@bug("TW307")
def sgd_learning_rate_fifty(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    fit(run, model, torch.optim.SGD(model.parameters(), 50.0), nn.CrossEntropyLoss(), x, y, steps=3)


@bug("TW308")
def scheduler_sets_lr_to_zero(run: tw.Run) -> None:
    x, y = blobs()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0)  # meant: warm-up factor
    crit = nn.CrossEntropyLoss()
    run.watch(model, opt, loss_fn=crit, every_n_steps=10, first_steps=3)
    for step in range(4):
        opt.zero_grad()
        crit(model(x[step * 32:(step + 1) * 32]), y[step * 32:(step + 1) * 32]).backward()
        opt.step()
        sched.step()


@healthy
def parts_called_around_the_watched_module_dict(run: tw.Run) -> None:
    """The loop calls the parts of a ModuleDict, never the watched root: the watch takes the first part called in
    a step as the step's forward (and says nothing of its never running)."""
    x, y = blobs()
    parts = nn.ModuleDict({"body": nn.Linear(10, 32), "head": nn.Linear(32, 3)})
    opt = torch.optim.Adam(parts.parameters(), 1e-3)
    run.watch(parts, opt, **WATCH)
    for step in range(12):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        opt.zero_grad()
        nn.functional.cross_entropy(parts["head"](torch.relu(parts["body"](x[idx]))), y[idx]).backward()
        opt.step()


@bug("TW307")
def sgd_rate_ten_times_too_high(run: tw.Run) -> None:
    """SGD with momentum at lr=2 where 0.2 trains: no NaN, but the updates are a third of the weights each step,
    the loss jumps about, the ReLUs die and the model ends at chance (which names the symptoms, not the rate)."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2000, 20, generator=g)
    y = (x[:, :5] @ torch.randn(5, 4, generator=g)).argmax(1)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=2.0, momentum=0.9)
    run.watch(model, opt, **WATCH)
    for _ in range(120):
        i = torch.randint(0, 2000, (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()


class _AuxHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.ReLU())
        self.main, self.aux = nn.Linear(32, 3), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return self.main(z), self.aux(z)


@bug("TW109")
def labels_shuffled_with_an_auxiliary_head(run: tw.Run) -> None:
    """Labels permuted apart from the inputs, trained through a main and an auxiliary head on the same targets
    (two loss calls of one kind per step, summed): the loss stays at chance all the same."""
    x, y = blobs()
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    model = _AuxHeads()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    run.watch(model, opt, **WATCH)
    for step in range(80):
        idx = torch.arange(step * 64, step * 64 + 64) % len(x)
        main, aux = model(x[idx])
        opt.zero_grad()
        (nn.functional.cross_entropy(main, y[idx]) + 0.3 * nn.functional.cross_entropy(aux, y[idx])).backward()
        opt.step()


@bug("TW412")
def a_copy_trained_in_place_of_the_watched_model(run: tw.Run) -> None:
    """The watched model and its optimizer are set up, then a deep copy is trained with an optimizer of its own:
    the watched model never runs and its optimizer never steps."""
    import copy

    x, y = blobs()
    model = mlp()
    run.watch(model, torch.optim.Adam(model.parameters(), 1e-3), **WATCH)
    twin = copy.deepcopy(model)
    opt = torch.optim.Adam(twin.parameters(), 1e-3)
    for step in range(30):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        opt.zero_grad()
        nn.functional.cross_entropy(twin(x[idx]), y[idx]).backward()
        opt.step()
