"""The Python API: `FST(...).compile(...)` on a DSPy program, `run`/`load_run`, settings by name, metrics in
dspy.GEPA's convention."""

import dspy
import pytest
import torch

from fst_prompt import FST, Feedback, load_run
from fst_prompt.api import configure, field_path
from fst_prompt.config import ConfigError
from fst_prompt.optimizer import feedback_metric, to_feedback


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
    """A metric written for dspy.GEPA: five arguments, a Prediction with score and feedback."""
    ok = str(pred.answer).strip() == gold.answer
    return dspy.Prediction(score=float(ok), feedback="Correct." if ok else f"Expected {gold.answer}.")


def examples(n, offset=0):
    return [dspy.Example(question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
            for i in range(offset, offset + n)]


# -- settings and metrics (no model) ---------------------------------------------------------------

def test_settings_resolve_by_leaf_name_dotted_or_top_level():
    assert field_path("cycles") == "loop.cycles" and field_path("learning_rate") == "rl.learning_rate"
    assert field_path("distill.learning_rate") == "distill.learning_rate"  # distill's own: dotted only
    assert field_path("rl.beta") == "rl.beta" and field_path("seed") == "seed"
    config = configure({"task": "chain_sum"}, cycles=3, steps_per_cycle=2, save_every=2, **{"rl.beta": 0.0})
    assert (config.loop.cycles, config.loop.steps_per_cycle, config.rl.beta) == (3, 2, 0.0)


def test_an_ambiguous_or_unknown_setting_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"'temperature' is ambiguous: it names .*policy.temperature.*rl.temperature"):
        field_path("temperature")
    with pytest.raises(ConfigError, match="unknown setting 'cylces'; did you mean cycles"):
        field_path("cylces")
    with pytest.raises(ConfigError, match="loop.cycles"):
        configure({"task": "chain_sum"}, cycles=0)


def test_a_bad_setting_fails_when_the_optimizer_is_built():
    with pytest.raises(ConfigError, match="learning_rate"):
        FST(gepa_metric, learning_rate=-1.0)
    with pytest.raises(TypeError, match="reflection_lm must be a dspy.LM"):
        FST(gepa_metric, reflection_lm="http://localhost:1")


def test_metrics_in_dspy_gepas_convention_become_feedback():
    gold, right, wrong = examples(1, 3)[0], dspy.Prediction(answer="6"), dspy.Prediction(answer="7")
    metric = feedback_metric(gepa_metric)
    assert metric(gold, right) == Feedback(1.0, "Correct.") and metric(gold, wrong) == Feedback(0.0, "Expected 6.")
    calls = []

    def three(gold, pred, trace=None):
        calls.append(trace)
        return pred.answer == gold.answer

    assert feedback_metric(three)(gold, right) == Feedback(1.0, "Score 1.")
    assert calls == [None]
    assert feedback_metric(lambda g, p: Feedback(0.5, "half"))(gold, right) == Feedback(0.5, "half")
    assert to_feedback({"score": 0.25, "feedback": "close"}) == Feedback(0.25, "close")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        to_feedback(3.0)
    with pytest.raises(ValueError, match="return a float in"):
        to_feedback("yes")


# -- compile on the tiny model (slow) --------------------------------------------------------------

@pytest.mark.slow
def test_compile_trains_a_dspy_program_and_returns_it_bound_to_the_trained_weights(tmp_path, tiny_path, endpoint):
    reflection = dspy.LM("openai/fake", api_base=endpoint, api_key="unused", cache=False, num_retries=0)
    run_dir = tmp_path / "run"
    optimizer = FST(gepa_metric, reflection_lm=reflection, model=str(tiny_path), run_dir=str(run_dir),
                    progress=False, cycles=1, steps_per_cycle=2, save_every=1, problems_per_step=2,
                    num_generations=2, max_completion_length=4, learning_rate=1e-3, warmup_steps=0,
                    max_metric_calls=8, population_size=2, reflection_minibatch_size=2, eval_n=4,
                    batch_size=4, max_new_tokens=4)
    student = dspy.Predict(QA)
    trained = optimizer.compile(student, trainset=examples(6), valset=examples(4, 100))

    result = trained.fst_result
    assert result.finished and result.ledger.rl_steps == 2 and result.ledger.reflection_calls >= 1
    assert result == load_run(run_dir)  # what the run directory holds, read back
    # the returned program carries the run's best instructions; the student is left as it was
    assert trained.predictors()[0].signature.instructions == result.best_instructions["self"]
    assert student.signature.instructions == "Answer the question."
    # it answers through the trained weights, in this process
    from safetensors.torch import load_file

    saved = load_file(result.weights / "model.safetensors")
    served = trained.predictors()[0].lm._engine_spec.policy.model.state_dict()  # dspy keeps the engine there
    assert saved and all(torch.equal(served[k], v) for k, v in saved.items())
    assert isinstance(trained(question="What is 2 + 2?").answer, str)

    # `fst export` of its run directory loads in plain dspy + transformers
    from transformers import AutoModelForCausalLM

    from fst_prompt.cli import main

    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    program = dspy.Predict(QA)
    program.load(str(out / "program.json"))
    assert program.signature.instructions == result.best_instructions["self"]
    exported = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in saved.items())


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path, tiny_path, endpoint, monkeypatch, capsys):
    """The README's `FST(...).compile(...)` example, as written, with the tiny model and the loopback endpoint
    in place of SmolLM2 and the offline reflection model."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    code = re.search(r"<!-- readme-example: compile -->\n```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.splitlines()) <= 30
    swaps = {"reflection_lm=None,": "reflection_lm=REFLECTION,",
             'model="smollm2-135m-instruct",': f"model={str(tiny_path)!r},"}
    for old, new in swaps.items():
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    reflection = dspy.LM("openai/fake", api_base=endpoint, api_key="unused", cache=False, num_retries=0)
    exec(compile(code, "README.md", "exec"), {"REFLECTION": reflection, "__name__": "readme"})
    result = load_run(tmp_path / "runs" / "readme-example")
    assert result.finished and result.ledger.rl_steps == 2 and result.start is not None
    assert str(result.cycles[-1].val_accuracy_best) in capsys.readouterr().out
