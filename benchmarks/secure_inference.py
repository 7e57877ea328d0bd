"""Secure inference on the demo's Adult MLP: error against plaintext, time per row, bytes exchanged.

Trains the demo's architecture (104 -> 64 -> ReLU -> 32 -> ReLU -> 2) for two epochs on the Adult train split,
then serves 1,000 test rows through ``torchwitness.secure`` (CKKS with TenSEAL, the model owner in its own process)
and in plaintext. ``--mpyc`` also times MPyC's secret-sharing building blocks (three local parties, 64-bit
fixed point) on the first layer, the alternative weighed in ARCHITECTURE.md. The last line is

    max abs error E, rows N, ms/row T (plaintext P)

    python benchmarks/secure_inference.py [--rows 1000] [--mpyc]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import torch
from torch import nn

from torchwitness.demo.adult import load_adult
from torchwitness.secure import SecureInference

_MPYC_PARTY = textwrap.dedent('''
    import sys, time, numpy as np
    from mpyc.runtime import mpc
    secfxp = mpc.SecFxp(64, 32)

    async def main(rows, features):
        await mpc.start()
        rng = np.random.default_rng(0)
        x_clear, w_clear = rng.normal(size=(rows, features)), rng.normal(0, 0.2, (features, 64))
        # party 0 is the client (rows), party 1 the model owner (weights), party 2 a helper: honest majority
        x = mpc.input(secfxp.array(x_clear if mpc.pid == 0 else np.zeros(x_clear.shape)), senders=0)
        w = mpc.input(secfxp.array(w_clear if mpc.pid == 1 else np.zeros(w_clear.shape)), senders=1)
        start = time.perf_counter()
        h = x @ w
        await mpc.output(h[0, 0])
        linear = time.perf_counter() - start
        relu = mpc.np_maximum(h, 0)
        out = await mpc.output(relu, receivers=[0])
        total = time.perf_counter() - start
        if mpc.pid == 0:
            print(f"MPYC {linear:.4f} {total - linear:.4f} {len(out)}", flush=True)
        await mpc.shutdown()

    mpc.run(main(int(sys.argv[-2]), int(sys.argv[-1])))
''')


def train(x: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        for i in torch.randperm(len(x)).split(256):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    return model.eval()


def mpyc_first_layer(rows: int, features: int, timeout: float = 300.0) -> str:
    """Seconds for the first Linear layer and its ReLU (secure comparisons) among three local MPyC parties."""
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "party.py")
        with open(script, "w") as f:
            f.write(_MPYC_PARTY)
        ports = [f"-Plocalhost:{24000 + os.getpid() % 1000 * 3 + i}" for i in range(3)]
        procs = [subprocess.Popen([sys.executable, script, "-M3", f"-I{i}", *ports, str(rows), str(features)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(3)]
        try:
            out = procs[0].communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            return f"MPyC: first layer of {rows} rows did not finish within {timeout:.0f} s"
        finally:
            for p in procs:
                p.kill()
    line = next((x for x in out.splitlines() if x.startswith("MPYC ")), None)
    if line is None:
        return "MPyC: the parties did not report (is mpyc installed?)"
    linear, relu = line.split()[1:3]
    return (f"MPyC (3 parties, 64-bit fixed point), first layer of {rows} rows: Linear {float(linear) * 1e3:.0f} ms, "
            f"ReLU by secure comparison {float(relu) * 1e3:.0f} ms ({float(relu) * 1e3 / (rows * 64):.2f} ms per "
            f"value, {float(relu) * 1e3 / rows * 96 / 64:.0f} ms per row for the MLP's 96 ReLUs)")


def polynomial_relu_error(model: nn.Sequential, rows: np.ndarray, degrees: tuple[int, ...] = (2, 4, 8)) -> str:
    """The error a non-interactive CKKS scheme would start from: ReLU replaced by least-squares polynomials fitted
    on each layer's observed pre-activation range, evaluated in plaintext float64 (encryption noise comes on top)."""
    layers = [m for m in model if isinstance(m, nn.Linear)]
    weights = [(m.weight.detach().double().numpy().T, m.bias.detach().double().numpy()) for m in layers]
    exact = rows
    ranges = []
    for i, (w, b) in enumerate(weights):
        z = exact @ w + b
        if i < len(weights) - 1:
            ranges.append((float(z.min()), float(z.max())))
            exact = np.maximum(z, 0)
        else:
            exact = z
    reference = torch.softmax(torch.from_numpy(exact), 1).numpy()
    parts = []
    for degree in degrees:
        h = rows
        for i, (w, b) in enumerate(weights):
            z = h @ w + b
            if i < len(weights) - 1:
                grid = np.linspace(*ranges[i], 2001)
                h = np.polynomial.Polynomial.fit(grid, np.maximum(grid, 0), degree)(z)
            else:
                h = z
        err = np.abs(torch.softmax(torch.from_numpy(h), 1).numpy() - reference).max()
        parts.append(f"degree {degree}: {err:.2e}")
    spans = ", ".join(f"[{lo:.1f}, {hi:.1f}]" for lo, hi in ranges)
    return f"polynomial ReLU (pre-activations in {spans}), max abs error on probabilities: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--mpyc", action="store_true", help="also time MPyC's building blocks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adult = load_adult()
    model = train(torch.from_numpy(adult.train.features), torch.from_numpy(adult.train.labels))
    rows = adult.test.features[:args.rows].astype(np.float64)

    start = time.perf_counter()
    with torch.no_grad():
        plain = torch.softmax(model(torch.from_numpy(rows).float()).double(), dim=1).numpy()
    plain_ms = (time.perf_counter() - start) * 1e3 / len(rows)

    with SecureInference(model) as session:
        start = time.perf_counter()
        secure = session.predict(rows)
        ms = (time.perf_counter() - start) * 1e3 / len(rows)
        sent = session.bytes_exchanged
    one = SecureInference(model)
    try:
        start = time.perf_counter()
        one.predict(rows[:1])
        single_ms = (time.perf_counter() - start) * 1e3
    finally:
        one.close()
    print(polynomial_relu_error(model, rows))
    if args.mpyc:
        print(mpyc_first_layer(5, rows.shape[1]))
    print(f"TenSEAL CKKS, batch of {len(rows)}: {ms:.1f} ms/row, {sent / len(rows) / 1e3:.0f} kB exchanged per row; "
          f"one row alone: {single_ms:.0f} ms (a batch of up to 4,096 rows costs about the same)")
    print(f"max abs error {np.abs(secure - plain).max():.2e}, rows {len(rows)}, ms/row {ms:.2f} "
          f"(plaintext {plain_ms:.4f})")


if __name__ == "__main__":
    main()
