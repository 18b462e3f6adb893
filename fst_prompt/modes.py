"""`loop.mode`, resolved once into what it means for the loop.

| mode           | fast step        | weights train | slow step's contexts   | fast step anchored on          |
|----------------|------------------|---------------|------------------------|--------------------------------|
| `fst`          | every cycle      | yes           | the population (K)     | the last T RL steps' problems* |
| `rl`           | never            | yes           | the seed instruction   | -                              |
| `gepa`         | every cycle      | no            | -                      | the next T steps' worth        |
| `gepa-then-rl` | first cycle only | yes           | the best instruction   | all of the stage's RL problems |

*: with one rollout stream (`gepa.rollouts: rl`), whose rollouts it reads; a stage's first fast step and
`gepa.rollouts: own` anchor on the next T RL steps' problems. With online judging the slow step's contexts are the
population and the proposals on trial.

`fst optimize` is `fst run` with `loop.mode=gepa`; `fst train` is `loop.mode=rl`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fst_prompt.fast.population import Population


@dataclass(frozen=True)
class Mode:
    name: str
    fast: Literal["every", "first", "never"]  # which cycles run a fast step
    trains: bool  # whether a slow step updates the weights
    contexts: Literal["population", "seed", "best"]  # what the slow step rolls out with
    anchor_whole_stage: bool  # anchor on all the stage's RL problems, not just the next cycle's

    @property
    def reads_rl_rollouts(self) -> bool:
        """Whether its fast steps can read the RL rollouts of the cycle before (one rollout stream)."""
        return self.trains and self.fast == "every"

    def fast_step_in(self, cycle: int) -> bool:
        return self.fast == "every" or (self.fast == "first" and cycle == 0)

    def train_contexts(self, population: Population, seed: dict[str, str]) -> list[dict[str, str]]:
        """The instructions the slow step's rollouts use (best first)."""
        if self.contexts == "population":
            return population.contexts
        if self.contexts == "best":
            return [population.best().instructions]
        return [seed]

    def anchor_steps(self, steps_per_cycle: int, stage_cycles: int) -> int:
        """How many RL steps' problems anchor a fast step."""
        return steps_per_cycle * stage_cycles if self.anchor_whole_stage else steps_per_cycle


MODES = {
    "fst": Mode("fst", fast="every", trains=True, contexts="population", anchor_whole_stage=False),
    "rl": Mode("rl", fast="never", trains=True, contexts="seed", anchor_whole_stage=False),
    "gepa": Mode("gepa", fast="every", trains=False, contexts="population", anchor_whole_stage=False),
    "gepa-then-rl": Mode("gepa-then-rl", fast="first", trains=True, contexts="best", anchor_whole_stage=True),
}


def resolve_mode(name: str) -> Mode:
    if name not in MODES:
        raise ValueError(f"unknown loop.mode {name!r}; choose one of {sorted(MODES)}")
    return MODES[name]
