"""chain_sum scored by the parity of the reply's length: with the tiny random model every score then depends
on the exact completion, so GEPA's scores (and which proposals it keeps) depend on the current weights."""

from fst_prompt import Feedback
from fst_prompt.programs import load_task


def even_length(gold, pred) -> Feedback:
    even = len(str(pred.answer)) % 2 == 0
    return Feedback(float(even), "Good." if even else "Write a reply of even length.")


def make_task(**kwargs):
    task = load_task("chain_sum", **kwargs)
    task.metric = even_length
    return task
