"""`ProgramGRPOTrainer`: GRPO on a program of several predictors (mmGRPO-style), each rollout the whole
program run on the live weights under one context of the population.

Each rollout calls every module the program reaches; every module call becomes a training row carrying the
rollout's program-level reward, laid out problem by problem, then module by module, then rollout by rollout
(`program_rows`), so TRL's group of G consecutive rows is one module's G calls on one problem: its advantage
baseline is per problem and per module. A module a rollout never reached keeps its row, masked out
(TRL's `env_mask`), so the groups stay whole. TRL gets the calls already made as token ids through its
`rollout_func` hook (set for the trainer's lifetime).

The program's calls are sampled with transformers' decoding (`Policy.generate`) even when `rl.use_vllm` is
set: vLLM generation covers single-predictor programs only (the README says so).
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer
from trl.models import unwrap_model_for_generation

from fst_prompt.console import say
from fst_prompt.evaluate import Rollout, run_rollouts
from fst_prompt.policy import Policy, Sampling
from fst_prompt.slow.trainer import PopulationGRPOTrainer

Call = tuple[list[int], list[int], bool]  # prompt ids, completion ids, whether the module ran


class ProgramGRPOTrainer(PopulationGRPOTrainer):
    def __init__(self, **kwargs: Any) -> None:
        self._replay: list[Call] | None = None  # the module calls of the batch being trained on
        super().__init__(**kwargs)
        self.rollout_func = self._replay_calls
        if self.use_vllm:
            say("note: a multi-predictor program's RL rollouts are sampled with transformers, not vLLM")

    def _generate_with_contexts(self, inputs: list[dict[str, Any]], ks: list[int], group: int) -> dict[str, Any]:
        """Each rollout runs the whole program on the live weights (sampled as RL samples) under its context's
        instructions for every module; every module call becomes a training row carrying the rollout's
        program-level reward. Rows are laid out problem by problem, then module by module, then rollout by
        rollout, so TRL's group of G consecutive rows is one module's G calls on one problem: its advantage
        baseline is per problem and per module, as in mmGRPO. A module a rollout never reached (the program
        stopped earlier) keeps its row with its tokens masked out (TRL's `env_mask`), so the groups stay whole."""
        rollouts = self._program_rollouts(inputs, ks)
        if self.model.training:
            self._keep([self._stored({"context_index": k, "prompt": [self.contexts[k], row["example_index"]]},
                                     row["example_index"], "\n---\n".join(r.completions), r.score, r.feedback,
                                     [{"module": c.module, "inputs": c.module_inputs, "text": c.text} for c in r.calls])
                        for row, k, r in zip(inputs, ks, rollouts, strict=True)])
        rows, self._replay = [], []
        for start in range(0, len(inputs), group):
            for module in self.modules:
                for i in range(start, start + group):
                    calls = [c for c in rollouts[i].calls if c.module == module]
                    if len(calls) > 1:
                        raise ValueError(f"predictor {module!r} ran {len(calls)} times in one rollout; RL trains "
                                         "programs whose predictors each run at most once per program call")
                    ran = bool(calls) and bool(calls[0].ids)
                    if ran:
                        self._replay.append((list(calls[0].prompt_ids), list(calls[0].ids), True))
                    else:  # any tokens: the row is masked out
                        self._replay.append((self.processing_class(module)["input_ids"],
                                             [self.processing_class.eos_token_id], False))
                    rows.append({**inputs[i], "prompt": [{"role": "user", "content": module}], "context_index": ks[i],
                                 "module": module, "module_ran": ran, "rollout_score": rollouts[i].score})
        try:
            return GRPOTrainer._generate_and_score_completions(self, rows)  # TRL's own: no rendering here
        finally:
            self._replay = None

    def _program_rollouts(self, inputs: list[dict[str, Any]], ks: list[int]) -> list[Rollout]:
        args = self.args
        sampling = Sampling(args.temperature, args.top_p, args.max_completion_length)
        # each rollout's sampling seed: from the run's seed, the step and its global row (reproducible)
        first = self.accelerator.process_index * len(inputs)
        seeds = [(args.seed or 0) * 1_000_003 + self.state.global_step * 100_003 + first + i
                 for i in range(len(inputs))]
        examples = [self.task.train[row["example_index"]] for row in inputs]
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            policy = Policy(model, self.processing_class, batch_size=len(inputs), sampling=sampling,
                            seed=args.seed or 0, name="rl", weight_first=self.weight_first)
            return run_rollouts(self.task, policy, examples, sampling=sampling, seeds=seeds,
                                per_example=[self.contexts[k] for k in ks])

    def _replay_calls(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        """TRL's `rollout_func`: the module calls already made, as prompt and completion token ids."""
        assert self._replay is not None and len(self._replay) == len(prompts)
        return {"prompt_ids": [p for p, _, _ in self._replay], "completion_ids": [c for _, c, _ in self._replay],
                "logprobs": None, "env_mask": [[int(ran)] * len(c) for _, c, ran in self._replay]}

