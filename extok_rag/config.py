"""Typed settings (litgpt style): one dataclass per concern, one source of truth per default."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from extok_rag.errors import ExtokError, IncompatibleModelError

DownscaleMethod = Literal["strided", "mean", "merge", "query_pool"]
# down-scales with weights of their own: the tokenizer runs them (`ExtensibleTokenizer.downscale`)
LEARNED_DOWNSCALES: tuple[DownscaleMethod, ...] = ("merge", "query_pool")
AdapterKind = Literal["none", "rmsnorm_linear", "rmsnorm_linear2"]

DEFAULT_LLM_NAME = "SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
DTYPE_HELP = (
    "auto (bf16 where the hardware has it natively, else fp32; `extok-rag models` says which), "
    "bfloat16, float16, float32."
)


@dataclass(frozen=True)
class ModelIdentity:
    """A model by name (or path) and fingerprint; two models match when fingerprints match.

    Checkpoints and indexes record the identities of the models they were made with."""

    name: str
    fingerprint: str

    def matches(self, other: ModelIdentity) -> bool:
        return self.fingerprint == other.fingerprint

    def describe(self) -> str:
        return f"'{self.name}' (fingerprint {self.fingerprint})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelIdentity:
        return cls(name=str(data["name"]), fingerprint=str(data["fingerprint"]))


def home_dir() -> Path:
    """Data dir for caches and checkpoints: `$EXTOK_RAG_HOME`, else ~/.cache/extok-rag."""
    env = os.environ.get("EXTOK_RAG_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "extok-rag"


@dataclass(frozen=True)
class AdapterConfig:
    """Output adapter between the tokenizer's last layer and the LLM's input space.

    `rmsnorm_linear`: optional fixed per-dimension standardisation (statistics set by training),
    then RMSNorm with weight `norm_scale`, then Linear(d, d) initialised to identity.
    `rmsnorm_linear2`: the same with a second Linear(d, d) after the first, no activation
    between them (ARC-Encoder's two-layer linear projector; ANCHORS.md), both identity at first.
    """

    kind: AdapterKind = "none"
    standardize: bool = False
    norm_scale: float = 1.0


@dataclass(frozen=True)
class TokenizerConfig:
    """Shape of an extensible tokenizer built from the first `num_layers` of the LLM."""

    num_layers: int = 8
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    lora_rank: int = 0  # >0: LoRA adapters on every attention/MLP linear of the layers
    lora_alpha: float = 32.0
    downscale: DownscaleMethod = "strided"  # how the states it was trained on were down-scaled

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        adapter = AdapterConfig(**data.get("adapter", {}))
        rest = {k: v for k, v in data.items() if k in ("lora_rank", "lora_alpha", "downscale")}
        return cls(num_layers=int(data["num_layers"]), adapter=adapter, **rest)


@dataclass(frozen=True)
class RuntimeConfig:
    """Where models run: device ("auto" picks CUDA when present) and dtype."""

    device: str = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # decoding reads the layers' 4-bit GGUF weights where the LLM has them ("auto",
    # `models.q4`), or always the model's own weights ("model"; the same values up to rounding)
    decode_weights: Literal["auto", "model"] = "auto"

    def resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolve_dtype(self) -> str:
        """auto: bf16 where the hardware computes it natively, fp32 elsewhere (`dtype_choice`)."""
        return fastest_dtype(self.resolve_device()) if self.dtype == "auto" else self.dtype


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it (e.g. an AVX2
    EPYC) a bf16 matmul measured 5.6x slower than fp32; with it, 1.6-1.75x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_description() -> str:
    """The CPU's model name, torch's vector capability and native bf16 (for benchmark and
    training logs: bf16 speed differs ~10x between CPUs of the same machine class)."""
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln)
    except (OSError, StopIteration):
        model = "unknown CPU"
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{model} ({torch.backends.cpu.get_cpu_capability()}, {bf16})"


def fastest_dtype(device: str) -> Literal["bfloat16", "float32"]:
    """bf16 where the hardware runs it natively (CUDA, CPUs with AVX512-BF16/AMX), else fp32."""
    return dtype_choice(device)[0]


def dtype_choice(device: str) -> tuple[Literal["bfloat16", "float32"], str]:
    """The dtype `auto` picks on `device`, and why (shown by `extok-rag models`)."""
    if device.startswith("cuda"):
        return "bfloat16", "CUDA computes bf16 natively"
    if device == "cpu" and cpu_has_native_bf16():
        return "bfloat16", "this CPU has AVX512-BF16/AMX: bf16 measured 1.6-1.75x faster than fp32"
    return "float32", (
        "this CPU has no native bf16 (no AVX512-BF16/AMX): bf16 matmuls are emulated, "
        "measured 5.6-65x slower than fp32 on AVX2 EPYCs"
    )


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. `temperature == 0` is greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    repeat_stop: int = 8  # stop once a run of at least this many tokens repeats right after
    # itself (a degenerate loop; docs/benchmarks.md "answer-endings"); 0: never


Objective = Literal["ar", "reconstruction"]
# Objectives a mixture may weight (training/objective.py, training/frame.py):
#   ar                    v1's two-stream continuation loss on packed sequences (paper Eq. 3)
#   chunk_reconstruction  a chunk predicted from its own embeddings (v1's warm-up)
#   qa                    QA pairs, gold + distractor paragraphs compressed in the ask frame;
#                         loss on the answer tokens
#   span                  a blanked span of a compressed paragraph, recalled in the ask frame
#   reconstruction        "repeat the context" in the ask frame, 1 -> n paragraphs (curriculum)
#   distill               KL(raw-context teacher || compressed student) on the answer tokens
#   expand                QA pairs in the frame `ask --mode expand` serves: the sentences that
#                         best match the question raw, the rest of each paragraph compressed
MIX_OBJECTIVES = ("ar", "chunk_reconstruction", "qa", "span", "reconstruction", "distill", "expand")
FRAME_OBJECTIVES = ("qa", "span", "reconstruction", "distill", "expand")
QA_OBJECTIVES = ("qa", "distill", "expand")  # the frame objectives that read QA pairs
CONTRAST_OBJECTIVES = ("qa", "expand")  # those a contrast weight adds its hinge to


@dataclass(frozen=True)
class MixPhase:
    """Objective weights for `steps` optimiser steps (0: until the end of the run), or until
    `share` of the time budget (`max_minutes`) is spent: the trainer then writes the phase's
    length into `steps` (saved with the checkpoint), so the draws stay a function of the step.
    Each micro-step draws one objective with these weights (seeded by its index)."""

    weights: dict[str, float]
    steps: int = 0
    share: float = 0.0  # >0 (and steps 0): the phase ends once this share of the budget is spent

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(MIX_OBJECTIVES)
        if unknown or not self.weights or min(self.weights.values()) < 0:
            raise ValueError(
                f"bad objective weights {self.weights}: names from {', '.join(MIX_OBJECTIVES)}"
            )
        if not 0.0 <= self.share < 1.0:
            raise ValueError(f"a phase's share of the budget must be in [0, 1), not {self.share}")

    @property
    def open(self) -> bool:
        """Its end is not fixed yet: a share of the budget whose step is still to come."""
        return self.share > 0 and self.steps == 0


@dataclass(frozen=True)
class TrainConfig:
    """Training of an extensible tokenizer with the LLM frozen (paper §2.2 and beyond).

    `ar` (the paper's two-stream objective): a packed sequence of `seq_len` tokens is cut into
    `seq_len // chunk_len` chunks; pass 1 encodes every chunk on its own, pass 2 predicts chunk
    i's tokens from the down-scaled embeddings of chunks < i plus its own preceding raw tokens.
    Frame objectives (`qa`, `span`, `reconstruction`, `distill`) put compressed paragraphs in
    the exact `ask` prompt and score only the answer. `mix` weights objectives per phase.
    """

    data_dir: str = ""  # packed shards (train.bin, val.bin, meta.json); "" = the data dir
    out_dir: str = ""  # checkpoints and log; "" = <home>/runs/<name>
    name: str = "run"
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(
            num_layers=8, adapter=AdapterConfig("rmsnorm_linear", standardize=True)
        )
    )
    init_from: str = ""  # a tokenizer checkpoint to start from; "shipped" = the packaged one
    seq_len: int = 1024
    chunk_len: int = 256
    k_choices: tuple[int, ...] = (2, 4, 8, 16, 32)
    # The QA objectives' ratios (qa, distill, expand; empty: k_choices). Each row still draws
    # from k_choices, and its draw maps by position onto this set, so a run with it and one
    # without read the same examples and differ only in k (a paired variant).
    answer_k_choices: tuple[int, ...] = ()
    # The expand objective's ratios, mapped the same way, in place of answer_k_choices for its
    # rows (empty: as qa's). `ask --mode expand` mostly serves the compressed rest at the largest
    # k that leaves room for the spans (16 or 32 at 0.25-0.35 of raw's positions).
    expand_k_choices: tuple[int, ...] = ()
    downscale: DownscaleMethod = "strided"
    objective: Objective = "ar"  # used when `mix` is empty
    reconstruction_steps: int = 0  # warm-up steps of chunk reconstruction (when `mix` is empty)
    mix: tuple[MixPhase, ...] = ()  # objective weights by phase (overrides `objective`)
    loss_first_tokens: int = 0  # >0: loss only on the first m tokens of each predicted chunk
    frame_rows: int = 8  # examples per micro-step of a frame objective
    context_len: int = 256  # tokens kept of each compressed paragraph (the index's chunk)
    qa_distractors: int = 1  # distractor paragraphs compressed beside a question's gold ones
    recon_chunks: tuple[int, int] = (1, 3)  # paragraphs per reconstruction row: first, last
    recon_curriculum_steps: int = 100  # steps over which that count grows
    recon_len: int = 128  # tokens kept of each paragraph to reconstruct
    recon_len_start: int = 0  # >0: recon_len grows from this over recon_curriculum_steps
    expand_share: tuple[float, float] = (0.15, 0.35)  # expand: share of the context's tokens
    # read raw, drawn per example from this range (the product's budgets 0.25-0.35 of raw)
    distill_temperature: float = 1.0
    # >0: qa and expand rows also read each question over another example's paragraphs, and
    # any fall of its answer NLL below the no-context one costs this much (`contrast_losses`):
    # the answer loss then falls only for what a row's own paragraphs say
    contrast_weight: float = 0.0
    train_mode: Literal["lora", "full", "adapter"] = "lora"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lr: float = 5e-4  # encoder (LoRA or full layers)
    adapter_lr: float = 1e-3
    # The merge tree's lr: its zero-started d x 2d corrections see 2d inputs at once, so an
    # Adam step of lr moves a merged state by about lr * 2d * |state|; 2e-3 wrecked it.
    merge_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_steps: int = 200  # optimiser steps
    max_minutes: float = 0.0  # >0: also stop once training time (probes excluded) reaches it
    budget_clock: Literal["wall", "cpu"] = "wall"  # max_minutes in wall time, or in this
    # process's CPU time (all threads): equal compute for runs that share a machine
    grad_accum: int = 4  # micro-steps (sequences, or frame batches) per optimiser step
    seq_batch: int = 1  # packed sequences per ar / chunk_reconstruction micro-step (one
    # batched encode and one batched LLM call: a GPU needs many to be busy)
    clip: float = 1.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    schedule_clock: Literal["steps", "budget"] = "steps"  # the schedule's progress: steps of
    # max_steps, or the share of max_minutes spent (a run on a lent GPU stops by the clock)
    stats_sequences: int = 16  # sequences used to fix the adapter's standardisation
    adapter_init: Literal["identity", "regression"] = "identity"  # regression: least squares
    # from each state to the LLM's embedding of the token at its position (a readable start)
    probe_every: int = 25  # optimiser steps between content probes (0 = never)
    probe_at_start: bool = True  # also probe the untrained tokenizer (step 0)
    probe_sequences: int = 8
    answer_probe_every: int = 0  # optimiser steps between answer probes (0 = never)
    answer_probe_items: int = 48  # held-out QA items it scores
    answer_probe_ks: tuple[int, ...] = (2, 4, 8)
    answer_probe_greedy: int = 0  # >0: the answer probe's greedy accuracy on that many items
    recon_probe_every: int = 0  # steps between reconstruction probes (answer-probe items'
    # first gold paragraph, cut to recon_len tokens, repeated back; 0 = never)
    probe_failure: Literal["raise", "record"] = "raise"  # a probe that raises: stop the run,
    # or log its error, drop that probe and train on (a lent GPU's minutes are the scarce thing)
    checkpoint_every: int = 10
    seed: int = 0
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # autocast and frozen LLM weights;
    # auto: bf16 only where the hardware computes it natively (config.fastest_dtype)

    def __post_init__(self) -> None:
        if self.contrast_weight < 0 or (self.contrast_weight and self.frame_rows < 2):
            raise ValueError(
                "contrast_weight must be >= 0, and > 0 needs frame_rows >= 2 (another "
                "example's paragraphs in the same batch)"
            )
        if any(p.share for p in self.mix) and self.max_minutes <= 0:
            raise ValueError("a phase set as a share of the budget needs max_minutes > 0")
        for name in ("answer_k_choices", "expand_k_choices"):
            ratios = getattr(self, name)
            if ratios and len(self.k_choices) % len(ratios):
                raise ValueError(
                    f"{name} {list(ratios)} must divide k_choices {list(self.k_choices)} "
                    "evenly (each k of it drawn as often)"
                )

    def frame_k(self, objective: str, k: int) -> int:
        """The ratio a frame row of `objective` reads, given its draw `k` from k_choices."""
        ratios = self.answer_k_choices if objective in QA_OBJECTIVES else ()
        if objective == "expand" and self.expand_k_choices:
            ratios = self.expand_k_choices
        return ratios[self.k_choices.index(k) % len(ratios)] if ratios else k

    @property
    def budget_s(self) -> float:
        """The time budget in seconds on `budget_clock` (0: none)."""
        return self.max_minutes * 60

    def resolved_dtype(self, device: str) -> Literal["bfloat16", "float32"]:
        return fastest_dtype(device) if self.dtype == "auto" else self.dtype

    def phase_at(self, step: int) -> MixPhase:
        """The objective weights in force at optimiser step `step` (0-based)."""
        if not self.mix:
            legacy = "chunk_reconstruction" if self.objective == "reconstruction" else "ar"
            first = "chunk_reconstruction" if step < self.reconstruction_steps else legacy
            return MixPhase({first: 1.0})
        return self.mix[self.phase_span(step)[0]]

    def phase_span(self, step: int) -> tuple[int, int]:
        """(index in `mix`, first step) of the phase in force at optimiser step `step`; a
        phase of 0 steps (open-ended, or a share of the budget not yet spent) lasts from there
        on, and past every phase the last one does."""
        start = 0
        for i, phase in enumerate(self.mix):
            if phase.steps == 0 or step < start + phase.steps:
                return i, start
            start += phase.steps
        return len(self.mix) - 1, start - self.mix[-1].steps

    def objectives(self) -> set[str]:
        """Every objective some phase can draw."""
        phases = self.mix or (self.phase_at(0), self.phase_at(self.reconstruction_steps))
        return {name for p in phases for name, w in p.weights.items() if w > 0}

    @property
    def chunks_per_sequence(self) -> int:
        return self.seq_len // self.chunk_len

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        tok = data.pop("tokenizer", None)
        for key in (
            "k_choices",
            "answer_k_choices",
            "expand_k_choices",
            "answer_probe_ks",
            "recon_chunks",
            "expand_share",
        ):
            if key in data:
                data[key] = tuple(data[key])
        if "mix" in data:
            data["mix"] = tuple(
                p if isinstance(p, MixPhase) else MixPhase(**p) for p in data["mix"]
            )
        cfg = cls(**data)
        if tok is not None:
            from dataclasses import replace

            cfg = replace(cfg, tokenizer=TokenizerConfig.from_dict(tok))
        return cfg


# how spans are scored (`extok_rag.spans`); learned: `models.sentence_selector`
SCORERS = ("minilm", "lexical", "both", "learned", "llm")
# the budget modes' frame (`models.ask_frame`, `ask.prompt`): light (the chunks read, then the
# question once; no default system prompt) or standard (ask_frame's, the other modes': the
# question twice, a slot for every chunk offered; kept to compare the two, issue 29)
FRAMES = ("light", "standard")
RETRIEVERS = ("vector", "text", "hybrid", "two-hop")  # how chunks are retrieved (`ask.retrieval`)
RETRIEVAL_HELP = (
    "vector (MiniLM), text (BM25), hybrid (both, rank-fused) or two-hop (hybrid, then a "
    "second query from the top chunk's bridge names; default)"
)
AUTO_K_CHOICES = (2, 4, 8, 16, 32)  # the paper's set; "auto" picks the smallest that fits


def k_choices(stride: int, k: int | None = None, at_least: int = 1) -> list[int]:
    """The k a prompt may use over an index of base stride `stride`: `k` alone when one is
    given (it must be a multiple of the stride), else AUTO_K_CHOICES' multiples of the stride
    from `at_least` up, smallest first."""
    if k is not None:
        return [check_k(k, stride)]
    return [c for c in AUTO_K_CHOICES if c % stride == 0 and c >= at_least]


def check_k(k: int, stride: int) -> int:
    """`k`, or a one-line error when an index of base stride `stride` cannot serve it."""
    if k < 1 or k % stride:
        raise ExtokError(f"k={k} is not a multiple of the index's stride {stride}")
    return k


def check_stored_stride(method: str, stride: int) -> int:
    """`stride`, or a one-line IncompatibleModelError when a tokenizer down-scaling by `method`
    cannot be stored at it: query pooling stores every position's state (stride 1), since its
    held-back layer reads each position's key when a reader pools."""
    if method == "query_pool" and stride != 1:
        raise IncompatibleModelError(
            f"a tokenizer that pools queries is stored at stride 1 (every position), not "
            f"{stride}: its held-back layer reads each position's key when a reader pools"
        )
    return stride


@dataclass(frozen=True)
class AskConfig:
    """How retrieved chunks reach the frozen LLM.

    `mode` is one of `extok_rag.ask.modes.MODES` (auto: raw top-n when it fits the budget,
    else the question's best sentences raw); `scorer` one of SCORERS.
    `budget` (expand / spans / truncated / auto): positions of the whole prompt; None: what
    the LLM window leaves after the answer. `k=None` is "auto": the smallest k in
    AUTO_K_CHOICES (a multiple of the index stride) that fits; a k the mode would ignore is
    refused.
    """

    top_n: int = 4
    k: int | None = None
    mode: str = "auto"
    source_lines: bool = False  # head each chunk with a short raw line naming its document
    budget: int | None = None
    scorer: str = "learned"  # expand / spans: how spans are scored against the question
    # (learned: the shipped span selector, the answer in the raw spans most often,
    # docs/benchmarks.md "span-probe"; confirmed on eval qa, "span-scorer-qa")
    frame: str = "light"  # expand / spans / truncated: one of FRAMES
    retrieval: str = "two-hop"  # one of RETRIEVERS: vectors, BM25, both fused, or two hops
    # (hybrid: recall@4 and accuracy up on SQuAD and HotpotQA, docs/benchmarks.md "retrieval-qa")
