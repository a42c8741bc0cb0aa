"""The rows of `eval qa`: its settings, and each condition (mode, chunks, k, budget share) a
row answers under. No torch here: the CLI reads the row families to build its options.

    none                no retrieval: the question alone
    raw                 the top-n retrieved chunks as raw text
    extok×k             the same top-n chunks as stored extensible embeddings down-scaled by k
    hybrid×k            the best chunk raw, the other n-1 compressed by k
    extok×k top-(k·n)   k·n chunks compressed by k: about raw top-n's position budget
    expand / spans / truncated at shares of each question's raw top-n positions, in each of
                        `frames` (light, the budget modes' own; standard, the frame before)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from extok_rag.ask.modes import MODES
from extok_rag.config import AskConfig


@dataclass(frozen=True)
class QAEvalConfig:
    questions: int = 300  # per set
    top_n: int = 4  # chunks of the raw / compressed / hybrid conditions
    ks: tuple[int, ...] = (2, 4, 8, 16)  # compressed top-n
    hybrid_k: int = 4
    budget_ks: tuple[int, ...] = (4,)  # compressed top-(k·n): raw top-n's position budget
    expand_budgets: tuple[float, ...] = ()  # expand / spans / truncated at these shares of
    # each question's raw top-n positions (issue: 0.25, 0.35, 0.5)
    expand_scorer: str = AskConfig.scorer
    frames: tuple[str, ...] = (AskConfig.frame,)  # the budget rows' frames (FRAMES); a row
    # in another than AskConfig's is named "... <frame> frame"
    max_new_tokens: int = 32
    repeat_stop: int = 8  # GenerationConfig.repeat_stop: an answer stops at a loop
    retrieval: str = AskConfig.retrieval  # one of RETRIEVERS, as `ask` retrieves
    batch_size: int = 8
    latency_questions: int = 20
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Condition:
    name: str
    mode: str  # AskConfig.mode
    top_n: int
    k: int | None = None
    share: float | None = None  # budget modes: this share of the question's raw positions
    scorer: str = AskConfig.scorer
    frame: str = AskConfig.frame

    def ask_config(self, budget: int | None = None) -> AskConfig:
        return AskConfig(
            top_n=self.top_n,
            k=self.k,
            mode=self.mode,
            budget=budget,
            scorer=self.scorer,
            frame=self.frame,
        )  # type: ignore[arg-type]


# Families of rows `eval qa --rows` can pick: every mode but auto (whose prompts are raw's or
# spans'), and "budget" (compressed top-(k·n)). A subset only saves time (every row is answered
# the same way alone as beside the others), so it is not part of a journal's settings.
ROW_FAMILIES = (*(m for m in MODES if m != "auto"), "budget")


def family(cond: Condition, cfg: QAEvalConfig) -> str:
    """The ROW_FAMILIES entry of a condition of `conditions(cfg)`."""
    if cond.mode == "compressed":
        return "compressed" if cond.top_n == cfg.top_n else "budget"
    return cond.mode


def conditions(cfg: QAEvalConfig) -> list[Condition]:
    n = cfg.top_n
    return [
        Condition("none", "none", 0),
        Condition(f"raw top-{n}", "raw", n),
        *(Condition(f"extok ×{k} top-{n}", "compressed", n, k) for k in cfg.ks),
        Condition(f"hybrid ×{cfg.hybrid_k} top-{n}", "hybrid", n, cfg.hybrid_k),
        *(Condition(f"extok ×{k} top-{k * n}", "compressed", k * n, k) for k in cfg.budget_ks),
        *(
            Condition(
                budget_name(mode, share, n, frame),
                mode,
                n,
                share=share,
                scorer=cfg.expand_scorer,
                frame=frame,
            )
            for share in cfg.expand_budgets
            for frame in cfg.frames
            for mode in ("expand", "spans", "truncated")
        ),
    ]


def budget_name(mode: str, share: float, n: int, frame: str) -> str:
    """A budget row's name: "spans 0.35·raw top-4", with " standard frame" after it when the
    frame is not AskConfig's."""
    suffix = "" if frame == AskConfig.frame else f" {frame} frame"
    return f"{mode} {share:.2f}·raw top-{n}{suffix}"
