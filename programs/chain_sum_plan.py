"""chain_sum as a two-module program: `plan` writes the operations out, `solve` computes the answer from the
question and that plan (reasoning-gym `chain_sum`, 2 terms of 1-2 digits, as in `chain_sum`). A multi-predictor
task for RL and FST: each module has its own instruction, and every call of each is trained on."""

import dspy

from fst_prompt import Task
from fst_prompt.gym import DEFAULT_SIZES, gym_metric, gym_splits


class Plan(dspy.Signature):
    """Write out the additions and subtractions in the question, in order, one per line."""

    question: str = dspy.InputField()
    plan: str = dspy.OutputField(desc="the operations, one per line")


class Solve(dspy.Signature):
    """Add and subtract the numbers, following the plan. Give the final answer as a single integer."""

    question: str = dspy.InputField()
    plan: str = dspy.InputField(desc="the operations to do, in order")
    answer: str = dspy.OutputField(desc="the integer result, digits only")


class PlanThenSolve(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.plan = dspy.Predict(Plan)
        self.solve = dspy.Predict(Solve)

    def forward(self, question: str) -> dspy.Prediction:
        plan = self.plan(question=question).plan
        return self.solve(question=question, plan=plan)


CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def make_task(seed: int = 0, adapter: str = "text", sizes: tuple[int, int, int] = DEFAULT_SIZES) -> Task:
    train, val, test = gym_splits("chain_sum", CONFIG, tuple(sizes), seed)
    return Task(name="chain_sum_plan", program=PlanThenSolve(), train=train, val=val, test=test,
                metric=gym_metric("chain_sum", CONFIG, numeric=True), adapter=adapter,
                extra={"dataset": "chain_sum", "config": CONFIG, "seed": seed, "sizes": list(sizes)})
