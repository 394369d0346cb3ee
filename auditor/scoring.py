"""Perplexity passes over the evaluation windows, as cheap as they can be made without changing a bit.

An audit scores the same windows many times (the original model, then each candidate zeroed, its control,
groups), so each pass is made cheap and no work is done twice:

- The loss goes through the model's head a slice of the vocabulary at a time (logsumexp accumulated
  online), so full-vocabulary logits for a whole window (2,048 tokens x 262k entries is 2 GiB in float32)
  never exist at once, and the head's weights are still read once per window, not once per chunk of
  tokens. The head is the model's own forward with its decoder swapped for the hidden states the decoder
  made, and its head for a slice of itself: softcapping, logit scales and the like apply as in an ordinary
  call. Checked once per model against the plain logits; a
  model where they differ is scored the plain way. A slice's matrix product and the online logsumexp may
  round differently from one whole product and `cross_entropy`: results agree to float32 rounding.
- Results are kept per window, keyed by the weights zeroed: the original model is scored once (a screen's
  baseline is its first windows), a screen's windows count toward the full pass of the same weights, and a
  measurement asked for twice costs nothing.
- Zeroing a weight in layer L changes nothing below L. The original model's input to layer L is kept for
  as many windows as `cache_bytes` allows, and a pass whose zeroed weights all lie at L or above replays it
  instead of running layers 0..L-1. Checked once per layer against the plain pass, to the bit.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .layout import DownProjection, decoder_layers, zeroed
from .placement import input_device
from .records import WeightRef

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20
"""Logits of one slice of the vocabulary for all tokens (float32); the loss needs about three such buffers."""
CUDA_CHUNK_BYTES = 1 << 30
"""On a GPU, where a forward holds up to MAX_BATCH windows (16k tokens): 16 MiB would be 256 vocabulary
entries a slice, 500 small calls (each waiting on the GPU) for a 128k vocabulary; 1 GiB makes it 8. Capped by
a sixteenth of the free memory."""
CACHE_FRACTION = 0.1
"""Default budget for the kept layer inputs: this share of the model's weight bytes."""
CHECK_TOKENS = 32


@dataclass
class Stats:
    """What the passes cost: window forwards run, and how much caching saved."""

    passes: int = 0
    """Measurements that ran at least one window."""
    windows_run: int = 0
    windows_reused: int = 0
    """Windows whose result was already known (the same weights zeroed before)."""
    layers_run: int = 0
    layers_skipped: int = 0
    """Decoder layers not run because their output was replayed from the cache."""


class HeadInput(nn.Module):
    """Stands in for the decoder while the model's head runs on hidden states the decoder made before."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs):
        from transformers.modeling_outputs import MoeModelOutputWithPast  # has every field a head reads

        return MoeModelOutputWithPast(last_hidden_state=self.hidden)


class HeadSlice(nn.Module):
    """Stands in for the head: its rows `start:stop` (views, not copies)."""

    def __init__(self, head: nn.Module, start: int, stop: int | None) -> None:
        super().__init__()
        self.weight = head.weight[start:stop]
        self.bias = None if getattr(head, "bias", None) is None else head.bias[start:stop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A spread model's last layer and head may sit on different GPUs; the head's own hook is gone here.
        return torch.nn.functional.linear(x.to(self.weight.device), self.weight, self.bias)


class Replay(nn.Module):
    """Stands in for a decoder layer below the cached boundary: returns the kept output of the layer just
    below it (every stand-in returns it; only the last one's reaches the layers that run)."""

    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


class Scorer:
    """Per-window negative log-likelihoods of `windows` [n, seq_len] on `model`, with weights zeroed.

    `perplexity(zero, n)` is exp(mean next-token NLL) over the first n windows with the weights `zero`
    set to 0 (the model is restored after). `boundaries`: the layers whose inputs are worth keeping (those
    of the candidates); `cache_bytes`: how much to keep (default CACHE_FRACTION of the weights, 0: none);
    `chunk_bytes`: the size of one slice of the logits (default CHUNK_BYTES, CUDA_CHUNK_BYTES on a GPU);
    `batch`: windows per forward (default `windows_per_forward`); `stats`: where to count the work (a
    fresh `Stats` by default).
    """

    def __init__(
        self,
        model,
        windows: torch.Tensor,
        projections: list[DownProjection],
        *,
        boundaries: Iterable[int] = (),
        cache_bytes: int | None = None,
        chunk_bytes: int | None = None,
        batch: int | None = None,
        stats: Stats | None = None,
        progress: bool = True,
    ) -> None:
        self.model, self.windows, self.projections, self.progress = model, windows, projections, progress
        self.batch = batch or windows_per_forward(model, windows.shape[1])
        self.device = input_device(model)
        self.results: dict[frozenset[WeightRef], tuple[torch.Tensor, set[int]]] = {}
        self.stats = Stats() if stats is None else stats
        self.decoder_name = decoder_attribute(model)
        self.layers = decoder_layers(model)[1] if self.decoder_name else None
        head = model.get_output_embeddings()
        self.vocab = head.weight.shape[0] if isinstance(getattr(head, "weight", None), torch.Tensor) else 0
        if chunk_bytes is None:
            chunk_bytes = CHUNK_BYTES
            if self.device.type == "cuda":
                chunk_bytes = max(CHUNK_BYTES, min(CUDA_CHUNK_BYTES, torch.cuda.mem_get_info(self.device)[0] // 16))
        self.chunk_bytes = chunk_bytes
        # An offloaded head has no values to slice between calls: such a model is scored the plain way.
        self.chunked = bool(self.decoder_name and self.vocab and chunk_bytes and not head.weight.is_meta)
        self.chunked = self.chunked and self.head_agrees()
        if cache_bytes is None:
            cache_bytes = int(CACHE_FRACTION * sum(p.numel() * p.element_size() for p in model.parameters()))
        self.cache_bytes = cache_bytes if self.chunked else 0
        self.boundaries = sorted({b for b in boundaries if b > 0}, reverse=True)
        self.cache: dict[int, dict[int, object]] = {b: {} for b in self.boundaries}
        self.cached_bytes = 0
        self.checked: set[int] = set()

    # --- public

    def perplexity(self, zero: Iterable[WeightRef] = (), n: int | None = None, *, desc: str = "perplexity") -> float:
        nll = self.nll(zero, n, desc=desc)
        mean = float(nll.sum()) / (nll.numel() * (self.windows.shape[1] - 1))
        return math.exp(mean) if mean < 700 else math.inf

    def nll(self, zero: Iterable[WeightRef] = (), n: int | None = None, *, desc: str = "perplexity") -> torch.Tensor:
        """Summed NLL of each of the first n windows (float64), computing only windows not scored before."""
        key = frozenset(zero)
        n = self.windows.shape[0] if n is None else n
        if key not in self.results:
            self.results[key] = (torch.zeros(self.windows.shape[0], dtype=torch.float64), set())
        values, known = self.results[key]
        todo = [i for i in range(n) if i not in known]
        self.stats.windows_reused += n - len(todo)
        if todo:
            self.stats.passes += 1
            lowest = min((r.layer for r in key), default=None)
            for b in [b for b in self.boundaries if lowest is not None and b <= lowest and self.cache[b]]:
                self.replay_agrees(b)  # before zeroing: the check replays the original model
            bar = tqdm(total=len(todo), desc=desc, unit="window", disable=not self.progress, leave=False)
            with zeroed(self.projections, key), bar:
                for s in range(0, len(todo), self.batch):
                    batch = todo[s : s + self.batch]
                    values[batch] = self.batch_nll(batch, lowest)
                    known.update(batch)
                    bar.update(len(batch))
        return values[:n]

    # --- one batch of windows

    @torch.inference_mode()
    def batch_nll(self, batch: list[int], lowest: int | None) -> torch.Tensor:
        """Summed NLL of each window of `batch`. `lowest`: the lowest layer with a zeroed weight (None: the
        original model, whose layer inputs are kept while the budget lasts)."""
        self.stats.windows_run += len(batch)
        if not self.chunked:
            ids = self.windows[batch].to(self.device)
            self.stats.layers_run += (len(self.layers) if self.layers is not None else 0) * len(batch)
            logits = self.model(input_ids=ids, use_cache=False).logits[:, :-1]
            return token_nll(logits.flatten(0, 1), ids[:, 1:].flatten()).view(len(batch), -1).double().sum(1)
        boundary = self.replayable(batch, lowest)
        self.stats.layers_skipped += (boundary or 0) * len(batch)
        return self.decoded_nll(batch, boundary, keep=lowest is None)

    def decoded_nll(self, batch: list[int], boundary: int | None, *, keep: bool) -> torch.Tensor:
        """Summed NLL of each window of `batch` by the decoder (replaying below `boundary`; keeping the
        layer inputs with `keep`) and the sliced head."""
        ids = self.windows[batch].to(self.device)
        with self.replaying(boundary, batch, keep=keep):
            hidden = self.decoder()(input_ids=ids, use_cache=False).last_hidden_state
        self.stats.layers_run += (len(self.layers) - (boundary or 0)) * len(batch)
        return self.head_nll(hidden[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).view(len(batch), -1).double().sum(1)

    def head_nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token NLL [tokens] of hidden states [tokens, hidden] through the model's own head, a slice of
        the vocabulary at a time: logsumexp accumulated online (in float32), the target's logit picked from
        its slice. The head's weights are read once for all the tokens, and no buffer exceeds chunk_bytes."""
        step = self.vocab_step(hidden.shape[0])
        peak = torch.full(targets.shape, -math.inf, device=hidden.device)
        total = torch.zeros(targets.shape, device=hidden.device)
        picked = torch.zeros(targets.shape, device=hidden.device)
        for start in range(0, self.vocab, step):
            logits = self.head(hidden, start, start + step).float()
            top = torch.maximum(peak, logits.max(1).values)
            total = total * torch.exp(peak - top) + torch.exp(logits - top[:, None]).sum(1)
            peak = top
            mine = (targets >= start) & (targets < start + step)
            picked[mine] = logits[mine, targets[mine] - start]
            del logits
        return peak + torch.log(total) - picked

    def vocab_step(self, tokens: int) -> int:
        """Vocabulary entries per slice for `tokens` tokens: a multiple of 16, at least 256."""
        return max(256, self.chunk_bytes // (4 * tokens) // 16 * 16)

    def head(self, hidden: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Logits [tokens, stop - start] of hidden states [tokens, hidden] for a slice of the vocabulary, by
        the model's own forward after its decoder (so that softcapping or a logit scale apply)."""
        head = self.model.get_output_embeddings()
        decoder = self.decoder()
        setattr(self.model, self.decoder_name, HeadInput(hidden[None]))
        self.model.set_output_embeddings(HeadSlice(head, start, stop))
        try:
            dummy = torch.zeros((1, hidden.shape[0]), dtype=torch.long, device=hidden.device)
            return self.model(input_ids=dummy, use_cache=False).logits[0]
        finally:
            setattr(self.model, self.decoder_name, decoder)
            self.model.set_output_embeddings(head)

    def decoder(self) -> nn.Module:
        return getattr(self.model, self.decoder_name)

    # --- the checks that keep the shortcuts exact

    @torch.inference_mode()
    def head_agrees(self) -> bool:
        """Whether the chunked head gives the plain forward's logits on the first tokens of the text."""
        ids = self.windows[0, :CHECK_TOKENS].to(self.device)[None]
        try:
            plain = self.model(input_ids=ids, use_cache=False).logits[0]
            hidden = self.decoder()(input_ids=ids, use_cache=False).last_hidden_state[0]
            step = self.vocab_step(hidden.shape[0])
            mine = torch.cat([self.head(hidden, v, v + step) for v in range(0, self.vocab, step)], dim=1)
        except Exception as e:  # any failure of the shortcut means: do without it
            log.info("chunked loss unavailable for %s (%s); scoring with full logits", type(self.model).__name__, e)
            return False
        # Slices of the product may round differently from the whole; what is checked is that the forward's
        # work after the head (a softcap, a scale) is done the same way: far more than rounding.
        scale = float(plain.abs().nan_to_num(0, 0, 0).max())
        if mine.shape != plain.shape or not torch.allclose(mine, plain, rtol=1e-5, atol=1e-5 * scale, equal_nan=True):
            log.info("chunked head of %s differs from its forward; scoring with full logits", type(self.model).__name__)
            return False
        return True

    def replayable(self, batch: list[int], lowest: int | None) -> int | None:
        """The highest boundary at or below `lowest` kept for every window of the batch (checked once
        against the plain pass), or None."""
        if lowest is None:
            return None
        for b in self.boundaries:
            if b <= lowest and b in self.checked and all(i in self.cache[b] for i in batch):
                return b
        return None

    def replay_agrees(self, b: int) -> None:
        """Once per boundary, on the original model: its first kept window, replayed, scores to the bit
        what the plain pass scored. A model whose layers do more than pass hidden states on loses that
        cache."""
        if b not in self.checked:
            self.checked.add(b)
            i = min(self.cache[b])
            if float(self.decoded_nll([i], b, keep=False)[0]) != float(self.results[frozenset()][0][i]):
                log.info("replaying layer %d's input changes the loss; not keeping it", b)
                self.cached_bytes -= sum(tensor_bytes(v) for v in self.cache.pop(b).values())
                self.boundaries.remove(b)

    @contextlib.contextmanager
    def replaying(self, boundary: int | None, batch: list[int], *, keep: bool) -> Iterator[None]:
        """Within: the layers below `boundary` replay the batch's kept input to it; with `keep` (the
        original model), hooks keep the inputs of every boundary, while the budget lasts."""
        layers, saved, hooks = self.layers, [], []
        if boundary is not None:
            kept = join([self.cache[boundary][i] for i in batch])
            saved = list(layers[:boundary])
            for j in range(boundary):
                layers[j] = Replay(kept)
        for b in self.boundaries if keep else ():
            hooks.append(layers[b - 1].register_forward_hook(self.keeper(b, batch)))
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for j, layer in enumerate(saved):
                layers[j] = layer

    def keeper(self, b: int, batch: list[int]):
        def keep(module, args, output):
            size = tensor_bytes(output) // len(batch)
            for k, i in enumerate(batch):
                if i not in self.cache[b] and self.cached_bytes + size <= self.cache_bytes:
                    self.cache[b][i] = part(output, k)
                    self.cached_bytes += size

        return keep


MAX_BATCH = 8


def windows_per_forward(model, seq_len: int, free_bytes: int | None = None) -> int:
    """Windows per forward pass: 1 on CPU, whose matrix kernels are already busy with one window (batches of
    2 and 4 ran no faster on this project's 2-core machine, with 512- and 2,048-token windows); on CUDA, as
    many as a quarter of the free memory holds by a rough estimate of one window's activations (hidden
    states, MLP and attention scores), at most MAX_BATCH."""
    device = input_device(model)
    if free_bytes is None:
        if device.type != "cuda":
            return 1
        free_bytes = torch.cuda.mem_get_info(device)[0]
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = config.hidden_size
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    heads = config.num_attention_heads
    itemsize = next(model.parameters()).element_size()
    per_window = seq_len * (8 * hidden + 3 * inner + heads * seq_len) * itemsize
    return max(1, min(MAX_BATCH, free_bytes // 4 // per_window))


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token NLL of each position, in float32 (the loss is taken from the logits, not the model's
    `.loss`, which for MoE models whose config asks for router logits also holds the router's auxiliary
    loss)."""
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def decoder_attribute(model) -> str | None:
    """The name under which a causal LM holds its decoder (the module its forward runs before the head)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    return next((name for name, child in model.named_children() if child is decoder), None)


def tensor_bytes(output) -> int:
    tensors = output if isinstance(output, tuple) else (output,)
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def part(output, k: int):
    """Window k of a layer's batched output (a tensor, or a tuple whose tensors are batched), copied."""
    if isinstance(output, tuple):
        return tuple(t[k : k + 1].clone() if isinstance(t, torch.Tensor) else t for t in output)
    return output[k : k + 1].clone()


def join(parts: list):
    """The batched output of single-window outputs kept by `part`."""
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(ts) if isinstance(ts[0], torch.Tensor) else ts[0] for ts in zip(*parts, strict=True))
    return torch.cat(parts)
