"""TW212-TW214: data that lies in range and is still wrong (token ids, image layout, a batch fed again)."""

from __future__ import annotations

from collections.abc import Iterator

from torchwitness.probes.inrange import FOLD_BINS, held_in_frames, loader_batch_sizes
from torchwitness.probes.view import StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule

DATA = ("EU-AI-Act:Art.10(2)(f)", "EU-AI-Act:Art.15")
_FOLD_MIN_IDS = 2048
# The density step of ids wrapped once into the table: a tokenizer k..k+1 times the table's size leaves parts
# (k+1):k dense, 2:1 down to 3:2 for the usual mismatches; each side flat is what sets a wrap apart.
_FOLD_STEP = 1.4
_HEAD = 8  # the numbers token_probe puts before its histogram


def _pile(name: str, values: list[float], vocab: int, padding: int | None, ndim: int, per_token: bool) -> str | None:
    top, second, top_id, runs, rows, ends, column, n = values[:_HEAD]
    end = None if per_token or padding == vocab - 1 else _end_pile(values[_HEAD:], top, int(top_id), vocab)
    if end is not None and int(top_id) != vocab - 1 and n >= 256 and end >= 0.03 * n:
        # A clamp of a vocabulary with a heavy head: its pile on the last row need not outnumber the head.
        return f"{end / n:.0%} of the ids fed to {name} are the table's last id {vocab - 1}, 50x or more the ids " \
               "around it: ids clamped into the table, or unknown tokens mapped to one id"
    # A clamp piles the ids past the table onto its last row (or negative ones onto row 0): there, a third of
    # the runner-up's lead is enough (natural token frequencies fall off gently: the top id is about twice the
    # next); anywhere else the pile must stand ten times above the next id, or three times while it holds 30% of
    # all ids (no word of natural text does; an unknown-token id of a vocabulary built from too little text does).
    lead = 3 if int(top_id) in (0, vocab - 1) or top >= 0.3 * n else 10
    towers = end is not None and int(top_id) == vocab - 1
    if n < 256 or top < 20 or top < 0.03 * n or (top < lead * max(second, 1) and not towers):
        return None
    if padding is not None and int(top_id) == padding:
        return None
    # One run per row, at its start or end; the id may also occur inside rows as a token of its own (id 0 of a
    # vocabulary used as padding), at most as often as the runner-up id, which bounds any real token's count.
    padding_like = runs <= 1.05 * rows + second and ends >= 0.8 * rows
    if ndim >= 2 and (padding_like or column > 0.5 * top):  # padding, or BOS/CLS-like tokens
        return None
    return f"{top / n:.0%} of the ids fed to {name} are id {int(top_id)} ({top / max(second, 1):.0f}x the next " \
           "most frequent id): ids clamped into the table, or unknown tokens mapped to one id"


def _end_pile(hist: list[float], top: float, top_id: int, vocab: int) -> float | None:
    """The ids piled on the table's last row when it holds 50x the ids around it (per id, its histogram bin and
    the one before), else None: a clamp of a vocabulary with a heavy head, whose pile need not outnumber the most
    frequent real token. Not judged for token-level targets (masked or next-token prediction), where a mask
    token may sit at the table's end, nor where the last row is the padding row."""
    if vocab < 4 * FOLD_BINS:
        return None
    per_bin = vocab / FOLD_BINS
    if top_id == vocab - 1:
        pile, around = top, (hist[-1] - top + hist[-2]) / (2 * per_bin - 1)
    else:  # the last bin is the pile (its few other ids hold the tail's density, a rounding error next to it)
        pile, around = hist[-1], hist[-2] / per_bin
    return pile if pile >= 50 * max(around, 0.5) else None


def _fold(hist: list[float]) -> str | None:
    """A step in density over the table: ids past the table's end wrapped onto its start double them there."""
    total = sum(hist)
    if total < _FOLD_MIN_IDS:
        return None
    for cut in range(4, FOLD_BINS - 3):
        left, right = hist[:cut - 1], hist[cut + 1:]  # the bin across the boundary is mixed: left out
        ml, mr = sum(left) / len(left), sum(right) / len(right)
        if mr <= 0 or ml < _FOLD_STEP * mr:
            continue

        def cv(xs: list[float], m: float) -> float:
            return (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5 / m

        if cv(left, ml) < 0.25 and cv(right, mr) < 0.25:
            return f"ids in the first {cut / FOLD_BINS:.0%} of the table are {ml / mr:.1f}x as frequent as the " \
                   "rest, each part flat: ids beyond the table wrapped onto its start (id % vocab)"
    return None


@training_rule("TW212", when="step", name="token-ids-piled-or-folded", title="Token ids pile onto one id or fold",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Size the embedding from the tokenizer (len(tokenizer)) instead of clamping or wrapping "
                           "ids into the table; check the unknown-token rate of the tokenizer on this data.",
               statistical=True)
def token_ids_piled(v: StepView) -> Iterator[Finding]:
    """The ids fed to an ``nn.Embedding`` are all valid, yet one id takes at least 3% of them and ten times the next
    most frequent id (three times, when it is the table's first or last row, where a clamp piles them, or when it
    holds 30% of all ids, as no word of natural text does; or, with one label per sequence, a last row holding fifty
    times the ids around it, even under a heavy head of real tokens), not the padding index, not padding in one run
    at either end of each row, not a token at a fixed position such as BOS, on two audited steps: ids were clamped
    into the table (``ids.clamp(max=V - 1)``) or unknown tokens all map to one id. Or, over the audited batches, the
    id density has a step, flat on both sides, with the first part of the table at least 1.4x as dense: ids wrapped
    into the table (``ids % V``). A masked LM's mask id on the table's last row is not a pile: its positions are
    the ones whose targets count, the others' targets ignored.

    Example: a 1,200-token vocabulary fed to ``nn.Embedding(1000, d)`` with ``ids.clamp(max=999)``.
    Fix: size the table from the tokenizer.
    """
    data = v.extra.get("data", {})
    h = v.history
    target = v.loss.target if v.loss is not None else v.targets
    per_token = target is not None and len(target.shape) >= 2  # a label per position (LM, MLM, tagging)
    for key, spec in v.extra.items():
        if not key.startswith("tok/") or key not in data:
            continue
        name, (vocab, padding, ndim) = key[4:], spec
        values = data[key]
        folded = h.notes.setdefault(f"TW212:hist:{name}", [0.0] * FOLD_BINS)
        folded[:] = [a + b for a, b in zip(folded, values[_HEAD:], strict=True)]
        piled = _pile(name, values, vocab, padding, ndim, per_token)
        mask = data.get("mask_last") if v.extra.get("mask_table") == name else None
        if piled is not None and int(values[2]) == vocab - 1 and mask is not None and mask[0] >= 0.9 \
                and mask[1] >= 0.5:  # a masked LM's [MASK] id: where it stands a target is, elsewhere none
            piled = None
        if piled is not None:
            first = h.notes.setdefault(f"TW212:first:{name}", v.step)
            if h.bump(f"TW212:{name}") >= 2:
                yield Finding.of("TW212", name, piled, step=first, details={"vocab": vocab})
                continue
        why = _fold(folded)
        if why is not None:
            yield Finding.of("TW212", name, why, step=v.step, details={"vocab": vocab})


@training_rule("TW213", when="step", name="scrambled-image-layout", title="Image batch scrambled by a reshape",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Turn channels-last images into NCHW with x.permute(0, 3, 1, 2), never .view or "
                           ".reshape, which keeps the memory order and interleaves the channels along each row.",
               statistical=True)
def scrambled_images(v: StepView) -> Iterator[Finding]:
    """An ``(N, C, H, W)`` input whose pixels do not correlate with their neighbours the way images do, on two
    audited steps: each pixel correlates more with the pixel ``C`` to its right than with the next one (the
    channels of channels-last data interleaved along the rows), or neighbours along a row correlate while
    those along a column do not (with correlated channels, as in natural images: both the next pixel and the
    pixel ``C`` to the right correlate, the pixel below hardly at all). Batches of noise (no correlation
    anywhere) are not reported.

    Example: ``torch.from_numpy(images).reshape(n, 3, 32, 32)`` from ``(n, 32, 32, 3)`` arrays.
    Fix: ``permute(0, 3, 1, 2)``.
    """
    nbr = v.extra.get("data", {}).get("in/nbr")
    t = v.primary
    if nbr is None or t is None:
        return
    r1, rc, rv = nbr
    periodic = rc >= 0.4 and rc - r1 >= 0.3
    rows_only = r1 >= 0.6 and -0.5 <= rv <= 0.4 * r1  # rows alternating in sign are a pattern, not a scramble
    # Natural images' channels correlate, so the next pixel (another channel of the same true pixel) correlates
    # about as well as the pixel C away; what gives the scramble away is the pixel below, a fraction of a true
    # row away: far less correlated than pixels C apart along the row, which an image's pixels never are.
    anisotropic = rc >= 0.4 and r1 >= 0.3 and rc - rv >= 0.35 and r1 - rv >= 0.25 and rv <= 0.2
    if not (periodic or rows_only or anisotropic):
        return
    first = v.history.notes.setdefault("TW213:first", v.step)
    if v.history.bump("TW213") >= 2:
        why = f"pixels correlate {rc:.2f} with the pixel {t.shape[1]} to the right but {r1:.2f} with the next" \
            if periodic else f"neighbours along rows correlate {r1:.2f}, along columns {rv:.2f}"
        yield Finding.of("TW213", f"input:{t.name}", f"input {t.name} {list(t.shape)} does not look like NCHW "
                         f"images: {why} (channels-last data reshaped instead of permuted?)", step=first,
                         details={"r1": r1, "rC": rc, "rV": rv})


@training_rule("TW214", when=("init", "step", "close"), name="same-batch-every-step",
               title="One batch tensor fed every step (taken once)",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=DATA,
               remediation="Draw a new batch each step (for x, y in loader), instead of one batch taken before "
                           "the loop (next(iter(loader)) or X[:64]) and fed again and again.")
def same_batch_every_step(v: StepView) -> Iterator[Finding]:
    """The model got the very same input tensor, unchanged, on at least 5 consecutive steps, and that tensor
    is a fixed slice (of at most 256 rows, and a quarter of the tensor or less) of a bigger one (``X[:64]``)
    or has the batch size of a ``DataLoader`` over a bigger dataset (``next(iter(loader))`` taken once).
    Full-batch training (the whole data set as one tensor every step, or a training split of it) is not
    reported.

    Example: ``xb, yb = next(iter(loader))`` before the loop. Fix: iterate the loader inside the loop.
    A loader the training code holds only as an iterator (``it = iter(loader)``, its last batch kept once
    ``next(it)`` runs dry) counts as a loader.
    """
    h, seen = v.history, v.watch.same_input
    if v.event == "init":  # the loaders in scope where the watch starts: by the end of the run their frame is gone
        h.notes["loaders"] = _loaders()
        return
    repeats, first = seen.longest
    if h.notes.get("TW214") or repeats + 1 < 5:
        return
    # A split of a data set (X[:400], or X[:128] of 320 rows) trained on in full is not a batch: slices count up
    # to a batch's size, and only as a quarter of the tensor or less (a training split is most of its data).
    slice_of_more = seen.storage_rows >= 4 * seen.rows and seen.rows <= 256
    if not slice_of_more:
        if not h.notes.get("TW214:looked"):  # one look at the frames per run, only once a batch has repeated this long
            h.notes["TW214:looked"] = True
            h.notes["loaders"] = h.notes.get("loaders", set()) | _loaders()
        if not any(b == seen.rows and n > b for b, n in h.notes["loaders"]):
            return
    h.notes["TW214"] = True
    where = "a slice of a larger tensor" if slice_of_more else "one batch of a DataLoader over more data"
    yield Finding.of("TW214", "input", f"the same input tensor ({seen.rows} rows, {where}) was fed unchanged on "
                     f"every step from step {first} ({repeats + 1} in a row when judged)", step=first,
                     details={"steps": repeats + 1, "rows": seen.rows})


def _loaders() -> set[tuple[int, int]]:
    """``(batch_size, dataset length)`` of the DataLoaders the training code holds, and of those it holds only
    through an iterator of theirs."""
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    out = loader_batch_sizes()
    for it in held_in_frames(_BaseDataLoaderIter):
        size = getattr(getattr(it, "_index_sampler", None), "batch_size", None)
        try:
            n = len(it._dataset)
        except TypeError:  # an iterable dataset has no length
            continue
        if isinstance(size, int) and size > 0:
            out.add((size, n))
    return out
