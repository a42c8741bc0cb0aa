"""One prompt builder per mode, registered against the one list of modes (`ask.modes.MODES`),
and `build_prompt`, the call every reader makes: `ask`, `serve`, `eval qa`, `generate` and the
LlamaIndex query engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from extok_rag.ask.budget import expand_prompt, spans_prompt, truncated_prompt
from extok_rag.ask.modes import AUTO_BUDGET_MODE, BUDGETED, MODES, check_mode
from extok_rag.ask.plain import compressed_prompt, hybrid_prompt, none_prompt, raw_prompt
from extok_rag.ask.prompt import Prompt, PromptRequest
from extok_rag.ask.retrieval import Retrieved
from extok_rag.config import AskConfig
from extok_rag.models.embedder import Embedder
from extok_rag.models.llm import FrozenLLM, Message


def auto_prompt(req: PromptRequest) -> Prompt:
    """Raw top-n when it fits the budget; else AUTO_BUDGET_MODE within the budget."""
    raw = raw_prompt(req) if req.chunks else none_prompt(req)
    if raw.positions <= req.budget:
        raw.mode = "raw"
        return raw
    prompt = BUILDERS[AUTO_BUDGET_MODE](req)
    prompt.mode = AUTO_BUDGET_MODE
    return prompt


BUILDERS: dict[str, Callable[[PromptRequest], Prompt]] = {
    "auto": auto_prompt,
    "raw": raw_prompt,
    "spans": spans_prompt,
    "expand": expand_prompt,
    "truncated": truncated_prompt,
    "compressed": compressed_prompt,
    "hybrid": hybrid_prompt,
    "none": none_prompt,
}
assert BUILDERS.keys() == MODES.keys(), "one builder per mode"


def build_prompt(
    llm: FrozenLLM,
    question: str,
    chunks: Sequence[Retrieved],
    cfg: AskConfig,
    stride: int,
    reserve: int,
    embedder: Embedder | None = None,
    history: Sequence[Message] = (),
) -> Prompt:
    """The chat row for `question` over `chunks` as `cfg.mode` reads them, leaving `reserve`
    positions for the answer; the budget modes need the retrieval `embedder` to score spans.
    `history`: earlier chat messages before the question's turn (`ask.conversation`), counted
    in every position and budget. A `k` the mode would ignore is refused in one line."""
    mode = check_mode(cfg.mode, cfg.k)
    if mode == "none" or (mode in BUDGETED and not chunks):
        mode = "none"
    chunks = chunks if mode != "none" else []
    prompt = BUILDERS[mode](
        PromptRequest(llm, question, chunks, cfg, stride, reserve, embedder, history)
    )
    prompt.mode = prompt.mode or mode
    return prompt
