"""One device/dtype policy (`policy.dtype`, device.py) for the trainer, the live policy, the KL probe's base and
`fst eval`; GRPOConfig settings passed through `rl.trainer_args`; the processes' agreement helpers."""

import contextlib

import pytest
import torch

from fst_prompt import device
from fst_prompt.config import ConfigError, RLConfig, RunConfig
from fst_prompt.state import changed_fields, config_fields


def test_auto_is_fp32_on_cpu_and_bf16_or_fp16_on_a_gpu(monkeypatch):
    assert device.resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.resolve_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.resolve_dtype("auto", "cuda") == torch.float16
    assert device.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        device.resolve_dtype("fp8")


def test_the_device_is_this_process_gpu_under_a_launcher(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert device.default_device() == torch.device("cuda", 3)


def test_the_trainer_flags_follow_the_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.mixed_precision_flags("auto") == {"bf16": False, "fp16": False, "use_cpu": True}
    assert device.mixed_precision_flags("bfloat16") == {"bf16": True, "fp16": False, "use_cpu": True}
    assert device.trainer_dtype("float16") == "float32"  # fp16 trains fp32 weights under autocast
    assert device.trainer_dtype("bfloat16") == "bfloat16"


def test_policy_trainer_and_probe_base_share_the_dtype(tmp_path, tiny_path, qa_task):
    from fst_prompt.policy import Policy, Sampling
    from fst_prompt.slow.build import build_trainer
    from fst_prompt.slow.kl import probe_base

    policy = Policy.load(tiny_path, dtype="bfloat16", batch_size=2, sampling=Sampling(max_new_tokens=3))
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    assert policy.model.device == torch.device("cpu")
    assert len(policy.generate([[{"role": "user", "content": "hi"}]])) == 1  # bf16 generation runs on CPU too

    rl = RLConfig(problems_per_step=1, num_generations=2, beta=0.0, max_completion_length=4)
    trainer = build_trainer(qa_task, tiny_path, rl, tmp_path / "ck", max_steps=1, dtype="bfloat16")
    assert trainer.args.bf16 and not trainer.args.fp16
    assert trainer.model.dtype == torch.bfloat16
    base = probe_base(trainer, tiny_path)  # beta = 0: TRL keeps no reference, so the probe loads one
    assert base.dtype == trainer.model.dtype and base.device == trainer.model.device
    fp32 = build_trainer(qa_task, tiny_path, rl, tmp_path / "ck32", max_steps=1)
    assert fp32.model.dtype == torch.float32 and not fp32.args.bf16


def test_trainer_args_pass_through_with_clear_errors(tmp_path, tiny_path, qa_task):
    from fst_prompt.slow.build import build_trainer
    from fst_prompt.stages import Schedule

    rl = RLConfig(problems_per_step=1, num_generations=2, trainer_args={"gradient_accumulation_steps": 2})
    trainer = build_trainer(qa_task, tiny_path, rl, tmp_path / "ck", max_steps=1, **rl.trainer_args)
    assert trainer.args.gradient_accumulation_steps == 2
    with pytest.raises(ValueError, match=r"gradient_acumulation_steps \(did you mean gradient_accumulation_steps"):
        RLConfig(trainer_args={"gradient_acumulation_steps": 2})
    with pytest.raises(ValueError, match=r"num_generations -> rl.num_generations"):
        RLConfig(trainer_args={"num_generations": 8})
    cfg = RunConfig(task="chain_sum", rl=rl)  # the anchor counts every micro-batch and process of a step
    assert Schedule(cfg, [qa_task], None, tmp_path, processes=2).problems_per_step == 1 * 2 * 2


def test_a_run_started_before_a_field_existed_resumes(tmp_path):
    defaults = config_fields(RunConfig.model_construct().model_dump())
    now = config_fields(RunConfig(task="chain_sum").model_dump())
    old = {k: v for k, v in now.items() if k != "policy.dtype"}  # a state.json written before policy.dtype
    assert changed_fields(old, now, defaults) == []
    assert changed_fields(old, now | {"policy.dtype": "bfloat16"}, defaults) == ["policy.dtype"]


def test_a_bad_dtype_is_a_config_error(tmp_path):
    from fst_prompt.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("task: chain_sum\npolicy: {dtype: fp8}\n")
    with pytest.raises(ConfigError, match="dtype"):
        load_config(path, model=RunConfig)


def test_one_process_runs_on_main_and_raises_what_main_raised():
    from fst_prompt.distributed import Processes

    procs = Processes()
    assert procs.main and procs.count == 1
    assert procs.on_main(lambda a, b: a + b, 2, 3) == 5 and procs.only_main(lambda: "server") == "server"
    assert procs.share({"x": 1}) == {"x": 1} and procs.sum(4) == 4
    with pytest.raises(FileExistsError, match="busy"):
        procs.on_main(_raise)


def _raise():
    raise FileExistsError("busy")


@pytest.mark.parametrize("fails", [False, True])
def test_the_process_group_is_torn_down_when_the_run_ends(tmp_path, fails):
    """Left to interpreter shutdown, gloo's threads aborted a launcher's worker after a finished run: the
    group is destroyed on the way out, after a success and after an error alike."""
    import torch.distributed as dist

    from fst_prompt.distributed import Processes

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    procs = Processes()
    procs.state = object()  # as under a launcher, with a group of one
    with pytest.raises(FileExistsError) if fails else contextlib.nullcontext(), procs:
        if fails:
            _raise()
    assert not dist.is_initialized()


def test_processes_that_train_with_different_populations_stop(monkeypatch):
    from types import SimpleNamespace

    import accelerate.utils

    from fst_prompt.slow.trainer import PopulationGRPOTrainer

    fake = SimpleNamespace(contexts=[{"self": "A"}], accelerator=SimpleNamespace(num_processes=2))
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda objs: objs + [([9], "another")])
    with pytest.raises(RuntimeError, match="different populations"):
        PopulationGRPOTrainer._batch_record(fake, [{"example_index": 1}, {"example_index": 1}])
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda objs: objs + [([9, 9][:1], objs[0][1])])
    record = PopulationGRPOTrainer._batch_record(fake, [{"example_index": 1}, {"example_index": 1}])
    assert record["problems"] == [1, 9]  # this process's problems, then the other's


def _rss_mb() -> float:
    import os

    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_release_memory_hands_freed_heap_pages_back_to_the_system():
    # freed blocks between live ones: glibc keeps their pages until it is asked to trim
    blocks = [bytearray(100_000) for _ in range(3000)]
    for b in blocks:
        b[::4096] = b"\1" * len(b[::4096])  # touch every page
    keep = blocks[::50]
    del blocks
    before = _rss_mb()
    if not device.release_memory():
        pytest.skip("not glibc: nothing to trim")
    assert before - _rss_mb() > 150, "the freed ~290 MB stayed with the process"
    assert len(keep) == 60
