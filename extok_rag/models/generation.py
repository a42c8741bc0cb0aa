"""Token-by-token decoding from a mixed prompt, with a KV cache and streamed text.

A plain loop rather than `model.generate`: the prompt is `inputs_embeds` with explicit
contiguous positions, and each step appends one token at the next position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from extok_rag.config import GenerationConfig
from extok_rag.models.decode_step import decode_step
from extok_rag.models.hf_cache import returned_cache
from extok_rag.models.llm import FrozenLLM
from extok_rag.models.mixed_input import Row, row_length
from extok_rag.models.static_kv import StaticKV


def next_token(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> int:
    """Pick one token from last-position logits (V,): greedy, or temperature + nucleus."""
    if cfg.temperature <= 0:
        return int(logits.argmax())
    # In float64 and shifted to max 0: any positive temperature (a float64) then scales the
    # top logit to 0 and the others to at most -inf, never to inf - inf = NaN.
    scaled = logits.double()
    probs = torch.softmax((scaled - scaled.max()) / cfg.temperature, dim=-1)
    if cfg.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < cfg.top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))


@torch.inference_mode()
def prefill(llm: FrozenLLM, rows: Sequence[Row], room: int) -> tuple[torch.Tensor, StaticKV]:
    """Each row's own forward of the model (it reads `inputs_embeds`), unpadded: the
    last-position logits (B, V) and the KV cache as a `StaticKV` with `room` spare columns for
    the answers. One row at a time, so a row's first token and cache are the same bits in any
    batch (a padded batch's forward rounds a row by its neighbours' lengths); a CPU forward is
    compute-bound, so batching prompts saved nothing but the padding it added.
    `decode_steps` and the serve batch (`DecodeBatch.admit`) both start here."""
    logits, caches = [], []
    for row in rows:
        batch = llm.batch([row])
        out = llm.model(
            inputs_embeds=batch.inputs_embeds,  # (1, T, d)
            attention_mask=batch.attention_mask,  # (1, T)
            position_ids=batch.position_ids,  # (1, T)
            use_cache=True,
            logits_to_keep=1,
        )
        logits.append(out.logits[:, -1])  # (1, V)
        caches.append([(layer.keys, layer.values) for layer in returned_cache(out).layers])
    return torch.cat(logits), StaticKV.from_rows(caches, room)


@torch.inference_mode()
def decode_steps(
    llm: FrozenLLM,
    rows: Sequence[Row],
    max_new_tokens: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    fast: bool = True,
    q4: bool = True,
    native: bool = True,
) -> Iterator[torch.Tensor]:
    """Prefill `rows` (each alone, `prefill`), then yield the next token of every row (B,),
    chosen by `pick` from the last-position logits (B, V), and feed it back at the row's next
    position; at most `max_new_tokens` steps. Stopping early is the caller's: stop iterating.
    Vocabulary logits are computed for the last position only (`logits_to_keep=1`): the head
    (V x d) over a whole prompt cost ~20% of a SmolLM2 prefill and B x T x V floats of memory.
    The steps run on a KV cache sized for the whole answer (`StaticKV`) through `decode_step`
    (`fast=False`: the model's forward at every step too, the path before the fast step); the
    fast step reads the layers' 4-bit GGUF weights where the LLM has them (`q4=False`: its
    bf16 weights; `FrozenLLM.q4_weights`), in C++ where `models.native` has a build (`native=False`:
    its Python loop, the same bits). With the fast step a row's tokens do not depend on
    the batch it shares: the same bits alone, in any batch (`StaticKV`'s layout)."""
    lengths = [row_length(row) for row in rows]
    llm.check_fits(max(lengths) + max_new_tokens)
    # the cache holds the rows longest first, as `DecodeBatch` does (`StaticKV.runs`: rows of
    # one attention width side by side); the caller sees them in its own order
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    logits, kv = prefill(llm, [rows[i] for i in order], max_new_tokens)  # (B, V)
    positions = kv.lengths.clone()  # (B,) each row's next position
    if max_new_tokens <= 0:
        return
    step = decode_step(llm.model, fast, llm.q4_weights() if q4 else None, native)
    shuffled = order != sorted(order)
    to_cache = torch.tensor(order, device=logits.device)  # cache row -> caller's row
    to_caller = torch.argsort(to_cache)  # caller's row -> cache row
    for n in range(max_new_tokens):
        tokens = pick(logits[to_caller] if shuffled else logits)  # (B,) in the caller's order
        yield tokens
        if n + 1 < max_new_tokens:
            logits = step(kv, tokens[to_cache] if shuffled else tokens, positions + n)


def loops(ids: Sequence[int], min_run: int) -> bool:
    """Whether `ids` end with a run of at least `min_run` tokens repeated right after itself
    (`… a b c a b c`): the model is looping. `min_run` 0: never."""
    if min_run <= 0:
        return False
    return any(ids[-p:] == ids[-2 * p : -p] for p in range(min_run, len(ids) // 2 + 1))


@torch.inference_mode()
def generate_ids(llm: FrozenLLM, row: Row, cfg: GenerationConfig) -> Iterator[int]:
    """Yield generated token ids until an end-of-sequence token, a loop (`loops`, after the
    repeated run), or `max_new_tokens`."""
    gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None

    def pick(logits: torch.Tensor) -> torch.Tensor:  # (1, V) -> (1,)
        return torch.tensor([next_token(logits[0].cpu(), cfg, gen)], device=llm.device)

    stop, ids = llm.eos_token_ids, []
    for tokens in decode_steps(llm, [row], cfg.max_new_tokens, pick):
        token = int(tokens[0])
        if token in stop:
            return
        yield token
        ids.append(token)
        if loops(ids, cfg.repeat_stop):
            return


@torch.inference_mode()
def generate_batch(
    llm: FrozenLLM, rows: Sequence[Row], max_new_tokens: int, repeat_stop: int = 8
) -> list[list[int]]:
    """Greedy decoding of several prompts at once (one KV cache): per row the same tokens as
    `generate_ids` (on the fast step, bit for bit: `decode_steps`). A row stops at
    end-of-sequence or a loop (`loops`)."""
    stop = torch.tensor(sorted(llm.eos_token_ids), device=llm.device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=llm.device)
    generated: list[list[int]] = [[] for _ in rows]
    for tokens in decode_steps(llm, rows, max_new_tokens, lambda logits: logits.argmax(-1)):
        done |= torch.isin(tokens, stop)
        for i in (~done).nonzero().flatten().tolist():
            generated[i].append(int(tokens[i]))
            if loops(generated[i], repeat_stop):
                done[i] = True
        if bool(done.all()):
            break
    return generated


class TextPieces:
    """The text of a growing answer, handed out in new pieces of whole characters: a token
    that ends inside a multi-byte character shows nothing until the character is complete
    (the whole answer is decoded each time: a byte-level token may finish a character)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = ""

    def push(self, token: int) -> str | None:
        """The text `token` adds (possibly ""), or None while a character is incomplete."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for more
            return None
        piece, self.shown = text[len(self.shown) :], text
        return piece


class TextStream:
    """Decoded text pieces of one answer as tokens arrive (whole characters only). Once
    iterated: `tokens`, the tokens generated, and `finish_reason`, "length" when the answer
    was cut at `max_new_tokens`, else "stop" (an end-of-turn token). `close()` stops decoding."""

    def __init__(self, llm: FrozenLLM, row: Row, cfg: GenerationConfig):
        self.llm, self.max_new_tokens = llm, cfg.max_new_tokens
        self.tokens = 0
        self._pieces = self._decode(generate_ids(llm, row, cfg))

    @property
    def finish_reason(self) -> str:
        return "length" if self.tokens >= self.max_new_tokens else "stop"

    def _decode(self, ids_in: Iterator[int]) -> Iterator[str]:
        text = TextPieces(self.llm.tokenizer)
        for token in ids_in:
            piece = text.push(token)
            self.tokens = len(text.ids)
            if piece is not None:
                yield piece

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()


def stream_text(llm: FrozenLLM, row: Row, cfg: GenerationConfig) -> TextStream:
    """Yield decoded text pieces as tokens arrive (whole characters only)."""
    return TextStream(llm, row, cfg)


def generate_text(llm: FrozenLLM, row: Row, cfg: GenerationConfig) -> str:
    return "".join(stream_text(llm, row, cfg))
