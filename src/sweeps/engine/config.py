"""One trial's network and optimizer settings, as the engine takes them.

Its fields are the options of `spec.options` (one row each) plus two settings of the study
that say how validation is scored. A field's default is its option's `fallback`: what a
configuration that does not name the option trains with, so a trial stored by an older
version (whose params lack today's options) retrains as it did.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sweeps.spec.options import OPTIONS, fallbacks

_FALLBACK = fallbacks()


@dataclass(frozen=True)
class NetConfig:
    """One trial's configuration (each field: `sweeps.spec.options.OPTIONS[name]`)."""

    depth: int
    width: int
    dropout: float
    weight_decay: float
    lr: float
    batch_size: int = _FALLBACK["batch_size"]
    class_weight: str = _FALLBACK["class_weight"]
    resampling: str = _FALLBACK["resampling"]
    importance: str = _FALLBACK["importance"]
    adversarial: float = _FALLBACK["adversarial"]
    noise: float = _FALLBACK["noise"]
    embedding: str = _FALLBACK["embedding"]
    n_frequencies: int = _FALLBACK["n_frequencies"]
    frequency_scale: float = _FALLBACK["frequency_scale"]
    embedding_dim: int = _FALLBACK["embedding_dim"]
    category_dim: int = _FALLBACK["category_dim"]
    ensemble: int = _FALLBACK["ensemble"]
    label_smoothing: float = _FALLBACK["label_smoothing"]
    huber: float = _FALLBACK["huber"]
    beta2: float = _FALLBACK["beta2"]
    schedule: str = _FALLBACK["schedule"]
    grad_clip: float = _FALLBACK["grad_clip"]
    freeze: int = _FALLBACK["freeze"]
    # How validation is scored, from the study (`Study.validation`), not from the trial:
    balanced_validation: bool = False  # score validation (and the trial) by the class-balanced loss
    worst_group: bool = False  # folds stop on, and the trial is scored by, the worst group's loss

    @classmethod
    def from_params(cls, params: dict, validation: str = "plain") -> NetConfig:
        """A trial's configuration, validated as its study says (`Study.validation`, stored
        in the study's settings): class-balanced, worst group, or plain."""
        return cls(**{k: params[k] for k in OPTIONS if k in params},
                   balanced_validation="class-balanced" in validation, worst_group="worst group" in validation)

    @property
    def embedding_shape(self) -> tuple[int, float, int] | None:
        if self.embedding != "periodic":
            return None
        return (self.n_frequencies, self.frequency_scale, self.embedding_dim)


OPTION_FIELDS = tuple(f.name for f in fields(NetConfig) if f.name in OPTIONS)


def groupable(a: NetConfig, b: NetConfig) -> bool:
    """Whether two trials can train in one stack: the same shape but for the width (padded)."""
    # resampling: the epoch's length; freeze: which tensors the optimizer steps
    same = ("depth", "batch_size", "embedding", "ensemble", "resampling", "freeze", "importance", "adversarial",
            "category_dim")
    if any(getattr(a, name) != getattr(b, name) for name in same):
        return False
    return a.embedding != "periodic" or (a.n_frequencies, a.embedding_dim) == (b.n_frequencies, b.embedding_dim)


