"""Divergence that stays finite: a loss back at the uniform-prediction level, or far above the best seen.

A step is *diverged* when its loss (the global mean token loss, the same number on every process)

- sits at the uniform-prediction level, within ``UNIFORM_TOLERANCE`` x ln(V) of ln(V) (V the model's
  output vocabulary: what a model predicting every token alike scores), once the run's loss has been
  below ``ARMED_BELOW`` x ln(V). A freshly initialised model *starts* at about ln(V), and a pre-training
  run from scratch may stay near it for its first steps: the level counts only after the loss has
  clearly left it and then come back to it (a model that collapsed to uniform predictions);
- or jumps above ``divergence_factor`` x the lowest loss of the run so far and at least ``JUMP_MIN_NATS``
  above it (a loss near zero, as when a small data set is memorised, may triple without diverging).

``divergence_patience`` diverged steps in a row stop the run; 0 never stops it. The state is a pure
function of the loss history, so a resumed run rebuilds it from the history its checkpoint holds, and
every process, seeing the same losses, decides the same at the same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

UNIFORM_TOLERANCE = 0.01  # a loss within 1% of ln(V) is at the uniform-prediction level ...
ARMED_BELOW = 0.95  # ... which counts once the loss has been below 95% of ln(V)
JUMP_MIN_NATS = 1.0  # a jump must also lie this far above the best loss


@dataclass
class DivergenceGuard:
    vocab_size: int | None  # the model's output vocabulary; None: no uniform-level rule
    factor: float | None  # None: no jump rule
    patience: int  # diverged steps in a row that stop the run; 0: never
    best: float = math.inf  # lowest loss of a step that was not diverged
    armed: bool = False  # the loss has been below ARMED_BELOW x ln(V)
    streak: list = field(default_factory=list)  # (step, loss, why) of the diverged steps in a row, up to the last

    @property
    def uniform(self) -> float:
        return math.log(self.vocab_size) if self.vocab_size else math.nan

    def why(self, loss: float) -> str | None:
        """Why a step of this loss is diverged, or None."""
        u = self.uniform
        if self.armed and abs(loss - u) <= UNIFORM_TOLERANCE * u:
            return "uniform"
        if self.factor is not None and loss > self.factor * self.best and loss - self.best >= JUMP_MIN_NATS:
            return "jump"
        return None

    def update(self, step: int, loss: float) -> bool:
        """Take the loss of ``step`` (1-based); True when the run must stop here."""
        why = self.why(loss) if self.patience else None
        if why is None:
            self.streak = []
            self.best = min(self.best, loss)
            self.armed = self.armed or loss < ARMED_BELOW * self.uniform
            return False
        self.streak.append((step, loss, why))
        return len(self.streak) >= self.patience

    @property
    def first_bad(self) -> int | None:
        """The 1-based step where the current streak began (None: no streak)."""
        return self.streak[0][0] if self.streak else None

    def message(self, lr: float) -> str:
        """What stopped the run: the steps, their losses, the rule, the lr."""
        first, last = self.streak[0][0], self.streak[-1][0]
        losses = ", ".join(f"{loss:.4g}" for _, loss, _ in self.streak[:6]) + (", ..." if len(self.streak) > 6 else "")
        kinds = {why for _, _, why in self.streak}
        what = []
        if "uniform" in kinds:
            what.append(
                f"at the uniform-prediction level ln({self.vocab_size}) = {self.uniform:.4g}, after it had been "
                f"below {ARMED_BELOW * self.uniform:.4g}"
            )
        if "jump" in kinds:
            what.append(f"above divergence_factor {self.factor:g} x the best loss {self.best:.4g}")
        span = f"step {first}" if first == last else f"steps {first}-{last}"
        return (
            f"training diverged at step {last}: {len(self.streak)} step(s) in a row ({span}: loss {losses}; "
            f"divergence_patience {self.patience}) had a loss {' or '.join(what)}; stopping at lr {lr:.3g}, lower it"
        )
