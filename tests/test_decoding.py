"""The policy's decoding drops finished rows and shares the prompt prefix, and still gives the tokens
batch-1 `model.generate` gives: greedy completions are unchanged by batching."""

import pytest
import torch

from fst_prompt.decoding import _shared_prefix, completion_logps, decode, greedy
from fst_prompt.policy import Policy, Sampling

QUESTIONS = ["What is 2 + 2?", "Name a color.", "Spell the word cat backwards, please, one letter at a time.",
             "Why?", "Count from one to five.", "What is the capital of France? Answer in one word."]


def _conversations(questions):
    return [[{"role": "system", "content": "Answer the question briefly."}, {"role": "user", "content": q}]
            for q in questions]


def _generate_one(policy: Policy, conversation, max_new_tokens: int, stop_ids) -> list[int]:
    """Reference: transformers' own greedy `generate`, one prompt at a time (no padding, no batch)."""
    tok = policy.tokenizer
    ids = tok(policy.prompt_text(conversation), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                    do_sample=False, temperature=None, top_p=None, top_k=None,
                                    pad_token_id=tok.pad_token_id, eos_token_id=sorted(stop_ids))
    new = out[0, ids.shape[1]:].tolist()
    stop = next((i for i, t in enumerate(new) if t in stop_ids), None)
    return new if stop is None else new[: stop + 1]


@pytest.mark.parametrize("weight_first", [True, False])
def test_greedy_batch_equals_batch1_generate_while_rows_finish_at_different_steps(tiny_policy, weight_first):
    convs = _conversations(QUESTIONS)
    policy = Policy(tiny_policy.model, tiny_policy.tokenizer, batch_size=len(convs),
                    sampling=Sampling(max_new_tokens=10), weight_first=weight_first)
    # The tiny model rarely ends a turn: make one of its frequent tokens a stop token, so that some rows end
    # early (and leave the batch) while others run to the token limit.
    free = [_generate_one(policy, c, 10, policy.stop_ids) for c in convs]
    stop = next(t for t in {t for row in free for t in row[1:6]}
                if 0 < sum(t in row for row in free) < len(free))
    policy.stop_ids = policy.stop_ids | {stop}

    gens = policy.generate(convs)
    expected = [_generate_one(policy, c, 10, policy.stop_ids) for c in convs]
    assert [g.text for g in gens] == [policy.tokenizer.decode(e, skip_special_tokens=True) for e in expected]
    assert [g.completion_tokens for g in gens] == [len(e) for e in expected]
    assert {g.finish_reason for g in gens} == {"stop", "length"}  # some rows left the batch early


def test_shared_prefix_leaves_each_prompt_a_token():
    assert _shared_prefix([[1, 2, 3]]) == 0
    assert _shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert _shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert _shared_prefix([[1, 2], [3, 2]]) == 0


def test_identical_prompts_decode_identically(tiny_policy):
    prompt = tiny_policy.tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        rows = decode(tiny_policy.model, [prompt] * 3, pick=greedy(), max_new_tokens=5,
                      stop_ids=tiny_policy.stop_ids, pad_id=tiny_policy.tokenizer.pad_token_id)
    assert rows[0] == rows[1] == rows[2] and len(rows[0]) == 5


@pytest.mark.slow
def test_real_model_greedy_batch_equals_batch1_generate():
    from fst_prompt.programs import load_task
    from fst_prompt.render import render

    task = load_task("chain_sum")
    policy = Policy.load("smollm2-135m-instruct", batch_size=8, sampling=Sampling(max_new_tokens=48))
    convs = [render(task, ex) for ex in task.val[:8]]
    gens = policy.generate(convs)
    expected = [_generate_one(policy, c, 48, policy.stop_ids) for c in convs]
    assert [g.text for g in gens] == [policy.tokenizer.decode(e, skip_special_tokens=True) for e in expected]
    assert len({g.completion_tokens for g in gens}) > 1  # rows of different lengths shared the batch


def test_seeded_sampling_depends_on_the_seed_not_on_the_batch(tiny_policy):
    convs, hot = _conversations(QUESTIONS), Sampling(temperature=1.0, max_new_tokens=8)
    seeds = [11, 12, 13, 14, 15, 16]

    def texts(batch_size, conversations=convs, seeds=seeds):
        policy = Policy(tiny_policy.model, tiny_policy.tokenizer, batch_size=batch_size, sampling=hot)
        return [g.text for g in policy.generate(conversations, seeds=seeds)]

    together = texts(6)
    assert texts(2) == together  # other batch-mates, other chunks: the same samples
    assert texts(1, convs[3:4], seeds[3:4]) == together[3:4]
    assert texts(6, seeds=[s + 100 for s in seeds]) != together
    with pytest.raises(ValueError, match="seeds"):
        texts(6, seeds=seeds[:2])


def test_seeded_rollouts_are_reproducible(tiny_policy, qa_task):
    from fst_prompt.evaluate import run_rollouts

    hot, examples = Sampling(temperature=1.0, max_new_tokens=8), qa_task.val[:4]
    first = run_rollouts(qa_task, tiny_policy, examples, sampling=hot, seeds=[1, 2, 3, 4])
    again = run_rollouts(qa_task, tiny_policy, examples, sampling=hot, seeds=[1, 2, 3, 4])
    assert [r.completions for r in first] == [r.completions for r in again]
    assert first[0].completions != run_rollouts(qa_task, tiny_policy, examples[:1], sampling=hot,
                                                seeds=[99])[0].completions


def test_completion_logps_equal_one_unpadded_forward_pass_per_row(tiny_policy):
    """The batched scoring (shared prefix once, rows of different prompt and completion lengths) gives each
    completion token the log-probability a plain forward pass over that row alone gives."""
    policy, tok = tiny_policy, tiny_policy.tokenizer
    prompts = [tok(policy.prompt_text(c), add_special_tokens=False)["input_ids"] for c in _conversations(QUESTIONS)]
    completions = [[5, 17, 9], [3], [8, 8, 2, 41, 7], [11, 4]] + [[6, 2]] * (len(prompts) - 4)
    got = completion_logps(policy.model, prompts, completions, tok.pad_token_id)
    for prompt, completion, row in zip(prompts, completions, got, strict=True):
        with torch.inference_mode():
            logits = policy.model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
        expected = logits.float().log_softmax(-1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)
        assert row == pytest.approx(expected.tolist(), abs=1e-4)
