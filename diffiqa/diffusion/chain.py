"""The restore chain's settings: ``Chain`` (sampler, steps, eta, t_start), the one fallback
for checkpoints that record none, and the constants that define a chain.

The restorer's config, the restore params and the cache spec all hold a ``Chain``;
``samplers.run_chain`` runs one to its end. Kept free of torch, so what only *records* a chain
(the cache spec read by training and evaluation) does not depend on how chains run.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffiqa.errors import ConfigError

SAMPLERS = ("ddpm", "ddim")
# keep_steps (the noisy states' levels) count steps before the end of the paper's 50-step chain.
REFERENCE_STEPS = 50


@dataclass(frozen=True)
class Chain:
    """One restore chain: ``sampler`` (ddim | ddpm) with ``steps`` network calls from
    ``t_start`` (1 = from pure noise, the paper; < 1 = from the distorted image noised to
    t_start, SDEdit-style); ``eta`` is DDIM's stochasticity (0 = deterministic; DDPM ignores it)."""

    sampler: str = "ddim"
    steps: int = 10
    eta: float = 0.0
    t_start: float = 1.0

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler={self.sampler!r}: expected one of {SAMPLERS}")
        if int(self.steps) < 1 or not 0.0 < float(self.t_start) <= 1.0:
            raise ConfigError(f"chain steps={self.steps}, t_start={self.t_start}: need steps >= 1, t_start in (0, 1]")
        if float(self.eta) < 0:
            raise ConfigError(f"chain eta={self.eta}: must be >= 0")

    @property
    def stochastic(self) -> bool:
        """Whether the chain draws noise after its start state (DDPM, or DDIM with eta > 0)."""
        return self.sampler == "ddpm" or self.eta > 0

    def label(self) -> str:
        return f"{self.sampler}-{self.steps} from t={self.t_start:g}"


# The one fallback: the chain of checkpoints that record none. They predate recorded chains and
# were run (and measured best) with DDIM-3 from t 0.1.
LEGACY_CHAIN = Chain(sampler="ddim", steps=3, eta=0.0, t_start=0.1)


def chain_from_record(record: dict | None) -> Chain:
    """A recorded chain -> ``Chain``: a checkpoint config's ``chain`` (or ``sampler``, its key
    before eta was part of it), a cache spec's flat fields. None -> ``LEGACY_CHAIN``. Records
    without eta ran eta 0; without t_start (caches before format 2) from pure noise."""
    if record is None:
        return LEGACY_CHAIN
    return Chain(sampler=record["sampler"], steps=int(record["steps"]), eta=float(record.get("eta", 0.0)),
                 t_start=float(record.get("t_start", 1.0)))
