"""The frozen downstream LLM: any Hugging Face causal LM, read through mixed inputs.

It never trains: parameters have `requires_grad=False` and the module stays in eval mode.
Gradients still flow *through* it to extensible embeddings when a caller needs them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from extok_rag.config import ModelIdentity, RuntimeConfig
from extok_rag.errors import InputTooLongError, ModelNotFoundError
from extok_rag.models.ask_frame import Part  # message text, or embeddings (m, d)
from extok_rag.models.defaults import resolve_llm
from extok_rag.models.identity import fingerprint
from extok_rag.models.mixed_input import (
    EmbeddingSegment,
    MixedBatch,
    Row,
    Segment,
    TokenSegment,
    build_batch,
)
from extok_rag.models.quiet import quiet_loading
from extok_rag.models.transfer import to_device


@dataclass(frozen=True)
class Message:
    """A chat message for the template: its role and its parts, text and embeddings."""

    role: str  # "system", "user" or "assistant"
    parts: Sequence[Part]


_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_PLACEHOLDER = "\x00EXTOK{}\x00"  # marks where an embedding segment sits in a chat prompt


def dense_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a tensor of `shape` laid out row-major with nothing between its rows."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


_SLOW_STRIDED = (torch.bfloat16, torch.float16)  # CPU dtypes whose strided matmul copies


def _dense_rows(head: torch.nn.Module, args: tuple) -> tuple | None:
    hidden = args[0]  # (B, keep, d)
    if hidden.dtype not in _SLOW_STRIDED or hidden.stride() == dense_strides(hidden.shape):
        return None
    return (hidden.clone(memory_format=torch.contiguous_format), *args[1:])


def dense_head_input(model: torch.nn.Module) -> None:
    """Hand the vocabulary head its input rows packed (once per model). `logits_to_keep`
    slices the last positions out of (B, T, d), and torch's bf16 CPU matmul does not fold such
    a strided 3-D input into one GEMM: it copies the whole head weight into a batched matmul
    (pytorch#151934), 55 ms against 4.6 for SmolLM2's 49,152 x 576 head at batch 1, 15x. The
    copy of the kept rows costs microseconds. One row's logits are the same bits; the rows of
    a batch (B > 1, never in `prefill`: one row at a time) may round apart (one GEMM, not B).
    float32 folds strided rows itself: left as it is."""
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_extok_dense_rows", False):
        head.register_forward_pre_hook(_dense_rows)
        head._extok_dense_rows = True


@dataclass
class FrozenLLM:
    model: torch.nn.Module  # a transformers *ForCausalLM
    tokenizer: object  # its transformers tokenizer
    identity: ModelIdentity
    load_seconds: float = 0.0
    gguf: Path | None = None  # the GGUF they came from, for 4-bit decoding (`decode_weights`)
    weights_dir: Path | None = None  # where they were loaded from
    _q4: dict | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, spec: str | Path | None = None, runtime: RuntimeConfig | None = None):
        """Load the default LLM (`spec=None`) or a local HF causal-LM directory, frozen."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        runtime = runtime or RuntimeConfig()
        start = time.perf_counter()
        resolved = resolve_llm(spec)
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    resolved.path, dtype=_DTYPES[runtime.resolve_dtype()], local_files_only=True
                )
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(f"cannot load LLM from {resolved.path}: {err}") from err
        model.to(runtime.resolve_device())
        llm = cls.from_model(model, tokenizer, resolved.name, time.perf_counter() - start)
        if runtime.decode_weights == "auto":
            llm.gguf, llm.weights_dir = resolved.gguf, resolved.path
        return llm

    @classmethod
    def from_model(cls, model, tokenizer, name: str, load_seconds: float = 0.0) -> FrozenLLM:
        model.eval().requires_grad_(False)
        dense_head_input(model)
        identity = ModelIdentity(name, fingerprint(model, model.config))
        return cls(model, tokenizer, identity, load_seconds)

    def q4_weights(self) -> dict | None:
        """The layers' 4-bit GGUF weights for decoding (`models.q4`: the very values the model
        holds, read in a quarter of the bytes), loaded once; None unless the model came from a
        GGUF, equals it, and is bf16 on a CPU whose kernels compute it."""
        if self._q4 is None:
            weights = None
            if self.gguf is not None and self.weights_dir is not None:
                from extok_rag.models import q4

                weights = q4.cached(
                    self.gguf, self.weights_dir, self.model, self.identity.fingerprint
                )
            self._q4 = weights or {}
        return self._q4 or None

    # -- properties -------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.config.max_position_embeddings)

    @property
    def eos_token_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen = getattr(self.model, "generation_config", None)
        extra = getattr(gen, "eos_token_id", None) if gen is not None else None
        ids.update(extra if isinstance(extra, list) else [extra])
        return {i for i in ids if i is not None}

    # -- inputs -----------------------------------------------------------------------------
    def tokenize(self, text: str) -> torch.Tensor:  # (n,) long
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, d)
        return self.model.get_input_embeddings()(to_device(ids, self.device))

    def batch(self, rows: Sequence[Row], padding_side: str = "right") -> MixedBatch:
        for row in rows:
            self.check_fits(sum(len(s) for s in row))
        return build_batch(rows, self.embed_tokens, padding_side)  # type: ignore[arg-type]

    def check_fits(self, n_positions: int) -> None:
        if n_positions > self.max_positions:
            raise InputTooLongError(
                f"input takes {n_positions} positions; the LLM window is {self.max_positions}"
            )

    def chat_row(
        self,
        user: Sequence[Part],
        system: str | None = None,
        history: Sequence[Message] = (),
    ) -> Row:
        """A generation prompt through the chat template: `history` (earlier messages, oldest
        first), then the user turn; any message mixes text and extensible embeddings (tensors
        (m, d)), in the order given. `system`: a system message before everything."""
        messages = ([Message("system", [system])] if system else []) + [
            *history,
            Message("user", list(user)),
        ]
        return self.messages_row(messages)

    def messages_row(self, messages: Sequence[Message]) -> Row:
        """Messages rendered by the chat template, ready for the assistant's answer; each
        embedding part becomes an EmbeddingSegment where it stands."""
        embeddings: list[torch.Tensor] = []

        def text(parts: Sequence[Part]) -> str:
            out = []
            for part in parts:
                if isinstance(part, str):
                    out.append(part)
                else:
                    out.append(_PLACEHOLDER.format(len(embeddings)))
                    embeddings.append(part)
            return "".join(out)

        rendered = [{"role": m.role, "content": text(m.parts)} for m in messages]
        prompt = self.tokenizer.apply_chat_template(
            rendered, tokenize=False, add_generation_prompt=True
        )
        row: list[Segment] = []
        for i, part in enumerate(embeddings):
            before, prompt = prompt.split(_PLACEHOLDER.format(i), 1)
            row += [TokenSegment(self.tokenize(before)), EmbeddingSegment(part)]
        row.append(TokenSegment(self.tokenize(prompt)))
        return [seg for seg in row if len(seg) > 0]

    # -- computation ------------------------------------------------------------------------
    def logits(self, batch: MixedBatch) -> torch.Tensor:  # (B, T, V)
        return self.model(**batch.model_inputs(), use_cache=False).logits

    def hidden_states(self, batch: MixedBatch) -> torch.Tensor:  # (B, T, d)
        """The decoder's final (normed) states, before the vocabulary head."""
        return self.model.get_decoder()(**batch.model_inputs(), use_cache=False).last_hidden_state

    def scored_logits(self, batch: MixedBatch) -> torch.Tensor:  # (N, V) fp32
        """Vocabulary logits only where a position predicts a scored token (N of them, in
        row-major order of `batch.next_token_targets`). The head (V x d) dominates a step when
        few positions are scored (answer tokens), so it is never applied elsewhere. The
        positions were found on the host (`batch.scored`): a boolean gather here would make
        the host wait for the card."""
        h = self.hidden_states(batch).flatten(0, 1).index_select(0, batch.scored)  # (N, d)
        return self.model.get_output_embeddings()(h).float()

    def token_losses(self, batch: MixedBatch) -> torch.Tensor:  # (B, T-1), 0 where no target
        """Next-token negative log-likelihood at every position whose next one is a token."""
        nll = F.cross_entropy(self.scored_logits(batch), batch.targets, reduction="none")  # (N,)
        return batch.per_position(nll)
