"""One pydantic config tree (`RunConfig`), loaded from YAML, for every mode of `fst run`. Every field has
a default, says what it is and has an effect; one `seed` derives the policy, GEPA and RL seeds.

Invalid files fail before any model loads, naming the field and what is allowed:

    fst run programs/chain_sum-fst.yaml --set gepa.max_metric_calls=300
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# A short, directive reflection prompt (gepa fills <curr_param> and <side_info>). A 1.5B reflection model
# follows a short directive prompt far better than gepa's stock template (FACTS.md: 9/12 sensible proposals vs
# 1/6). This one asks for a method (written-out working, the way the feedback's worked solutions go) and the
# answer form: a small policy gains most where an instruction carries a procedure (DESIGN.md §6). Tried on
# chain_sum with the same 6 examples, 2 proposals each, SmolLM2 on train n = 48 (seed instruction 0.188, a
# hand-written step-by-step one 0.333): this template 0.208 and 0.271; a three-part spec 0.167 and 0.250; the
# previous "task + rules, under 100 words" template restated the task in its gepa round (val 0.164 = seed).
# This one (static directive first, so the server reuses its prefix) with 16-problem judging and the task sentence
# kept: GEPA-only chain_sum val 0.328 and 0.336 (seeds 0 and 1, n = 128; seed 0.164, hand-written 0.328).
DIRECTIVE_TEMPLATE = """You write instructions for a small AI assistant. It gets problems wrong when it answers at \
once. Write a new instruction that makes it write out its working the way the worked solutions in the \
feedback do, one short line per step with the intermediate result on it, and then end with a final line \
"Answer: <answer>" in the form the feedback expects. Keep the task statement of the current instruction as \
its first sentence. Do not mention the particular problems below or their numbers. Keep it under 100 words.

The current instruction:
```
<curr_param>
```

The assistant's replies under it and the feedback on them (wrong replies come with the worked solution when \
there is one):
```
<side_info>
```

Reply with only the new instruction, inside ``` blocks."""

# For tasks whose answers follow a convention the seed instruction does not state (a label set, a house format):
# the feedback says what was expected, and a good instruction states the convention.
CONVENTION_TEMPLATE = """You write instructions for a small AI assistant. Its answers are checked against a \
convention it has not been told; the feedback below says which answer was expected and why. Write a new \
instruction that teaches it the convention: the exact answers allowed (keep every one the current instruction \
already names and add those the feedback reveals) and, for each, the kind of input that gets it, with a short \
example. Tell it to reply with the answer only. Keep the task statement of the current instruction as its first \
sentence. Keep it under 120 words.

The current instruction:
```
<curr_param>
```

The assistant's replies under it and the feedback on them:
```
<side_info>
```

Reply with only the new instruction, inside ``` blocks."""

# `reflection.template` may name one of these instead of giving the text.
TEMPLATES = {"procedure": DIRECTIVE_TEMPLATE, "convention": CONVENTION_TEMPLATE}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReflectionConfig(Strict):
    model: str = Field("qwen2.5-coder-1.5b-instruct",
                       description="endpoint model id, or a built-in GGUF served locally when base_url is unset")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; unset = local llama.cpp server")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(600, ge=16, description="longest reflection reply")
    repeat_penalty: float | None = Field(1.1, description="llama.cpp repeat penalty; None for other servers")
    timeout_s: float = Field(180, gt=0, description="per request")
    retries: int = Field(2, ge=0, description="extra attempts after a failed request")
    backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles each retry")
    n_ctx: int = Field(4096, ge=512, description="context of the local server")
    threads: int | None = Field(None, ge=1, description="CPU threads of the local server (default: all cores)")
    template: str = Field(DIRECTIVE_TEMPLATE, description="reflection prompt with <curr_param> and <side_info>, or "
                          f"the name of a built-in one: {', '.join(TEMPLATES)}")
    max_instruction_chars: int = Field(1200, ge=20, description="longer proposals are rejected as runaway text")
    seed: int | None = Field(None, description="seeds every request (with the prompt's hash), where the server "
                             "honours `seed` (llama.cpp does); default: the run's `seed`")
    keep_task_statement: bool = Field(True, description="a proposal that drops the task's own instruction (the "
                                      "signature's) gets it back as its first line")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        v = TEMPLATES.get(v, v)
        if "\n" not in v and len(v) < 40:
            raise ValueError(f"{v!r} is not a built-in template ({', '.join(TEMPLATES)}) nor a prompt with "
                             "<curr_param> and <side_info>")
        missing = [p for p in ("<curr_param>", "<side_info>") if p not in v]
        if missing:
            raise ValueError(f"the template must contain {missing}")
        return v

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        parts = urlsplit(v) if v is not None else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
            # the message never repeats the value: a URL can carry a password or a key in its query
            raise ValueError("must be an http(s) URL of an OpenAI-compatible endpoint, e.g. "
                             "http://127.0.0.1:8080/v1, or unset (null) for the local llama.cpp server")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _not_a_key(cls, v: str | None) -> str | None:
        if v and not looks_like_env_name(v):  # the message never repeats the value: it may be the key itself
            raise ValueError("give the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key itself "
                             "(the value given is not shown)")
        return v


# Prefixes of API keys and tokens (OpenAI, Stripe-style, GitHub, Slack, AWS, Google, Hugging Face, Anthropic).
_KEY_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "ghp_", "gho_", "ghs_", "ghu_", "github_pat_", "xoxb-", "xoxp-",
                 "AKIA", "ASIA", "AIza", "hf_", "sk-ant-")


def looks_like_env_name(value: str) -> bool:
    """An environment-variable name (letters, digits, _; not a digit first) that does not look like a key: no
    known key prefix, and not a long mix of upper case, lower case and digits."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value) or value.startswith(_KEY_PREFIXES):
        return False
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return not (mixed and len(value) >= 16)


def redacted(data: dict[str, Any]) -> dict[str, Any]:
    """A config dump safe to write: a reflection endpoint's user:password@ and query string (where some
    services take a key) are replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    reflection = dict(data.get("reflection") or {})
    url = reflection.get("base_url")
    if url:
        parts = urlsplit(url)
        host = parts.netloc.rsplit("@", 1)[-1]
        reflection["base_url"] = urlunsplit((parts.scheme, ("***@" if "@" in parts.netloc else "") + host,
                                             parts.path, "***" if parts.query else "", ""))
    return data | ({"reflection": reflection} if reflection else {})


class PolicyConfig(Strict):
    model: str = Field("smollm2-135m-instruct",
                       description="model name (see `fst models`), HF hub id (org/name) or HF folder")
    batch_size: int = Field(64, ge=1, description="rollouts per generate call; measured on 2 cores, chain_sum, n=64, "
                            "128 tokens: 1.34 rollouts/s at 16, 1.78 at 32, 1.88 at 64, 1.89 at 128")
    weight_first: bool = Field(True, description="linear layers as W·xᵀ while generating (decoding.py): same "
                               "completions, 1-7% faster on a 2-core AMD EPYC (Zen 1), chain_sum, batch 64; CPU only")
    max_new_tokens: int = Field(128, ge=1, description="longest completion in GEPA rollouts and evaluations")
    temperature: float = Field(0.0, ge=0, description="0 = greedy; GEPA scores are then deterministic")
    seed: int | None = Field(None, description="sampling seed (default: the run's `seed`)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights of the trainer, the live policy, the KL probe's base and `fst eval`: auto = "
        "fp32 on CPU, bf16 on a GPU (fp16 where it has no bf16); the trainer's bf16/fp16 flags follow (device.py)")


class GEPAConfig(Strict):
    max_metric_calls: int = Field(200, ge=1, description="problems GEPA may score per round (each with "
                                  "samples_per_problem rollouts), scoring the best carried candidate on the anchor "
                                  "included; re-scoring the other K-1 comes on top")
    reflection_minibatch_size: int = Field(6, ge=1, description="problems a proposal is made from and judged "
                                           "on: it is accepted when its summed score on them beats its parent's")
    reflection_records: int | None = Field(
        None, ge=1, description="most of the minibatch's problems shown to the reflection LM (the wrong ones "
        "first, then one right one), so a larger minibatch judges proposals more surely without a longer (slower) "
        "reflection prompt; default: all of them")
    samples_per_problem: int | None = Field(
        None, ge=1, description="S: new rollouts per problem when scoring a candidate, at the scoring temperature; "
        "the problem's score is their mean. Default: 4, or 1 with rollouts=rl (the parent's side is then its G/K "
        "stored RL rollouts a problem)")
    temperature: float | None = Field(
        None, ge=0, description="sampling temperature of scoring rollouts; default: rl.temperature (with "
        "rl.top_p and rl.max_completion_length: what RL samples) in the modes that train, 0 (greedy, one rollout, "
        "policy.max_new_tokens) in gepa mode")
    val_check_n: int = Field(32, ge=0, description="overfitting check: every accepted proposal's gain over its "
                             "parent on the first N val problems, beside its anchor gain (rounds.jsonl); 0 = off")
    population_size: int = Field(4, ge=1, description="K: candidates carried between rounds")
    anchor_size: int | None = Field(
        None, ge=1, description="problems in a fast step's anchor (Pareto) set, in the order RL visits them from "
        "the next RL step on; default: exactly the problems of the next T RL steps (gepa-then-rl: of all its steps)")
    rollouts: Literal["rl", "own"] = Field(
        "rl", description="where an FST fast step's rollouts come from. rl (one stream): reflection and the carried "
        "candidates' scores read the RL rollouts of the last T steps from the run's rollout store, and only judging "
        "a new proposal draws new ones (within new_rollouts); a stage's first fast step, with no RL rollouts yet, "
        "samples its own within the same budget. own: every fast step samples its own rollouts (the behaviour "
        "before 2026-12-07). gepa and gepa-then-rl rounds always sample their own (there is no RL before them)")
    judging: Literal["minibatch", "online"] = Field(
        "minibatch", description="with rollouts=rl, how a new proposal is judged. minibatch: on a minibatch of the "
        "anchor, its parent's side served from the store (gepa's acceptance test); online: put on trial in the "
        "next T RL steps' contexts beside the population (no new rollouts) and kept or dropped by the Pareto rule "
        "on the RL rollouts drawn under it")
    new_rollouts: int | None = Field(
        None, ge=0, description="with rollouts=rl, most new policy rollouts a fast step draws (scoring a proposal "
        "and what the store lacks; the val checks aside); default: one cycle's RL rollouts (T x B x G)")
    max_staleness: int | None = Field(
        None, ge=1, description="with rollouts=rl, the oldest stored RL rollout a score may be read from, in RL "
        "steps before the fast step (older ones are not reused); default: T")
    trials: int = Field(2, ge=1, description="online judging: proposals put on trial per fast step")
    keep_rollout_cycles: int = Field(2, ge=1, description="cycles of RL rollouts the store keeps whole; older "
                                     "rows keep their scores and ids, not their text")
    use_merge: bool = Field(False, description="gepa's merge proposals (opt-in)")
    use_wandb: bool = Field(False, description="gepa's own Weights & Biases tracking (off by default)")
    use_mlflow: bool = Field(False, description="gepa's own MLflow tracking (off by default)")
    seed: int | None = Field(None, description="gepa's seed (default: the run's `seed`); cycle c uses seed + c")


# TRL's report_to values, and the package each needs (checked before any model loads).
TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


# GRPOConfig settings the run decides (from the field named, or the loop itself): not for `rl.trainer_args`.
OWNED_TRAINER_ARGS = {
    "output_dir": "run_dir", "max_steps": "loop.cycles x loop.steps_per_cycle", "learning_rate": "rl.learning_rate",
    "per_device_train_batch_size": "rl.problems_per_step x rl.num_generations", "num_generations": "rl.num_generations",
    "max_completion_length": "rl.max_completion_length", "temperature": "rl.temperature", "top_p": "rl.top_p",
    "loss_type": "rl.loss_type", "epsilon_high": "rl.epsilon_high", "beta": "rl.beta",
    "warmup_steps": "rl.warmup_steps", "seed": "rl.seed", "save_steps": "rl.save_every", "report_to": "rl.report_to",
    "use_vllm": "rl.use_vllm", "vllm_mode": "rl.vllm_mode", "bf16": "policy.dtype", "fp16": "policy.dtype",
    "use_cpu": "policy.dtype (the device is CUDA when available)", "ddp_timeout": "loop.wait_minutes",
}


class RLConfig(Strict):
    problems_per_step: int = Field(2, ge=1, description="B: problems per step")
    num_generations: int = Field(4, ge=2, description="G: rollouts per problem (paper: 8)")
    learning_rate: float = Field(5e-6, gt=0)
    warmup_steps: int = Field(2, ge=0, description="linear warm-up, then constant")
    loss_type: Literal["cispo", "grpo", "dr_grpo", "dapo"] = Field("cispo", description="paper: CISPO")
    epsilon_high: float = Field(4.0, gt=0, description="CISPO: upper truncation of the importance weight (paper ~4)")
    beta: float = Field(1e-3, ge=0, description="KL penalty to the initial weights (paper 1e-3)")
    max_completion_length: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0, description="sampling temperature of RL rollouts")
    top_p: float = Field(1.0, gt=0, le=1)
    lora: bool = Field(False, description="train a LoRA adapter instead of all weights")
    lora_r: int = Field(16, ge=1)
    save_every: int = Field(6, ge=1, description="checkpoint every N steps; must divide loop.steps_per_cycle "
                            "(unset: gcd(6, loop.steps_per_cycle))")
    kl_probe_n: int = Field(16, ge=1, description="val prompts (seed instruction) in the KL probe")
    kl_samples: int = Field(2, ge=1, description="completions sampled per probe prompt")
    report_to: str = Field("none", description="tracker for TRL's per-step and our per-cycle metrics: "
                           f"one of {sorted(TRACKERS)}")
    use_vllm: bool = Field(False, description="generate RL rollouts with vLLM (GPU, `pip install -e '.[vllm]'`)")
    vllm_mode: Literal["colocate"] = Field(
        "colocate", description="only colocate: TRL's server mode samples a whole group from one prompt, but "
        "each rollout here has its own context")
    seed: int | None = Field(None, description="TRL's seed and the problem order (default: the run's `seed`)")
    trainer_args: dict[str, Any] = Field(
        default_factory=dict, description="more GRPOConfig settings, passed through as given (e.g. "
        "gradient_accumulation_steps, gradient_checkpointing, deepspeed, fsdp, vllm_gpu_memory_utilization); the "
        "ones set from the fields above are refused here")

    @field_validator("trainer_args")
    @classmethod
    def _grpo_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            return v
        import dataclasses

        from trl import GRPOConfig

        known = {f.name for f in dataclasses.fields(GRPOConfig)}
        unknown = sorted(set(v) - known)
        if unknown:
            import difflib

            hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k
                     for k in unknown]
            raise ValueError(f"not GRPOConfig settings: {', '.join(hints)}")
        owned = sorted(set(v) & set(OWNED_TRAINER_ARGS))
        if owned:
            raise ValueError("set these through their own fields: " + ", ".join(
                f"{k} -> {OWNED_TRAINER_ARGS[k]}" for k in owned))
        return v

    @field_validator("report_to")
    @classmethod
    def _tracker_installed(cls, v: str) -> str:
        import importlib.util

        if v not in TRACKERS:
            raise ValueError(f"unknown tracker {v!r}; choose one of {sorted(TRACKERS)}")
        if TRACKERS[v] and importlib.util.find_spec(TRACKERS[v]) is None:
            raise ValueError(f"report_to {v!r} needs the {TRACKERS[v]!r} package: `pip install {TRACKERS[v]}`, "
                             "or set rl.report_to: none")
        return v

    @field_validator("use_vllm")
    @classmethod
    def _vllm_installed(cls, v: bool) -> bool:
        import importlib.util

        if v and importlib.util.find_spec("vllm") is None:
            raise ValueError("vllm is not installed: `pip install -e '.[vllm]'` on a CUDA machine, or set false")
        return v


class DistillConfig(Strict):
    """FST-distill (slow/distill.py): on-policy self-distillation of the population's best instruction into the
    weights with TRL's SDFT trainer, after each stage's last cycle (for a continual schedule: at every switch)."""

    steps: int = Field(0, ge=0, description="optimizer steps of self-distillation at the end of each stage (0: none)")
    student: Literal["seed", "none"] = Field("seed", description="what the student is shown: the seed instruction, "
                                             "or none (the signature's fields only); the teacher: the best instruction")
    teacher: Literal["frozen", "live", "ema"] = Field(
        "frozen", description="the teacher's weights: frozen at the phase's start (the stage's last checkpoint), "
        "live (the student's own, as they train: on Qwen-0.5B 8 steps at lr 5e-6 took the best instruction from "
        "0.75 to 0.22, n = 32, where a frozen one kept 0.62 and took the seed's from 0 to 0.56), or an EMA of "
        "the student's starting from the frozen ones (TRL's)")
    problems_per_step: int = Field(2, ge=1, description="train problems per step")
    num_generations: int = Field(4, ge=1, description="student completions per problem")
    max_completion_length: int | None = Field(None, ge=1, description="default: rl.max_completion_length")
    learning_rate: float = Field(1e-6, gt=0)
    alpha: float = Field(1.0, ge=0, le=1, description="1: reverse KL(student || teacher) on the student's own "
                         "samples (the paper's FST-distill); 0: forward KL; between: a mixture (TRL's)")
    topk: int = Field(100, ge=1, description="teacher logits kept per token (TRL's topk_logits distillation)")
    save_every: int = Field(2, ge=1, description="checkpoint every N distill steps; must divide steps")
    trainer_args: dict[str, Any] = Field(default_factory=dict, description="more SDFTConfig settings, as given")

    @field_validator("trainer_args")
    @classmethod
    def _sdft_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            return v
        import dataclasses
        import warnings

        with warnings.catch_warnings():  # TRL warns that its experimental trainers may change (pinned: trl 1.16)
            warnings.simplefilter("ignore")
            from trl.experimental.sdft import SDFTConfig

        known = {f.name for f in dataclasses.fields(SDFTConfig)}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"not SDFTConfig settings: {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _checkpoint_at_the_end(self) -> DistillConfig:
        if self.steps and self.steps % self.save_every:
            raise ValueError(f"distill.save_every ({self.save_every}) must divide distill.steps ({self.steps}), so "
                             "that the phase ends on a checkpoint")
        return self


class LoopConfig(Strict):
    mode: Literal["fst", "rl", "gepa", "gepa-then-rl"] = Field(
        "fst", description="fst: GEPA round then T RL steps each cycle; rl: RL with the seed instruction; gepa: "
        "GEPA rounds on frozen weights; gepa-then-rl: one GEPA round, then RL with its best instruction")
    cycles: int = Field(5, ge=1, description="fast/slow cycles")
    steps_per_cycle: int = Field(6, ge=1, description="T: RL steps after each fast step (paper: 6)")
    eval_n: int = Field(64, ge=1, description="val examples evaluated after every cycle")
    eval_every: int = Field(0, ge=0, description="also every this many RL steps inside a cycle: the best "
                            "instruction's greedy accuracy on the first eval_every_n val examples, to evals.jsonl "
                            "(not counted as RL time); 0 = only the evaluation after every cycle")
    eval_every_n: int = Field(32, ge=1, description="val examples of the evaluations inside a cycle (eval_every)")
    test_n: int = Field(0, ge=0, description="at the end: test accuracy of the seed vs the best instruction on "
                        "the first N test examples of every task, written to result.json; 0 = skip")
    archive: bool = Field(True, description="continual schedules: each finished stage's best instruction is kept "
                          "for its task outside the K slots; later evaluations and the export of that task use it")
    wait_minutes: int = Field(480, ge=1, description="several processes (torchrun / accelerate launch): how long "
                              "the others wait for the main one's GEPA round and evaluation before the job fails "
                              "(the collective timeout)")


class StageConfig(Strict):
    task: str = Field(..., description="task name in programs/ or a path to a task file")
    task_kwargs: dict[str, Any] = Field(default_factory=dict)
    cycles: int = Field(..., ge=1, description="cycles on this task (cycles x T RL steps) before the next one")


class RunConfig(Strict):
    task: str | None = Field(None, description="the task (or give `schedule` for continual learning)")
    task_kwargs: dict[str, Any] = Field(default_factory=dict)
    schedule: list[StageConfig] = Field(default_factory=list,
                                        description="continual learning: tasks in order; replaces task + loop.cycles")
    seed_instruction: str | None = Field(None, description="one task-agnostic seed instruction for every predictor "
                                                           "(default: each task's own)")
    policy: PolicyConfig = PolicyConfig()
    gepa: GEPAConfig = GEPAConfig()
    reflection: ReflectionConfig = ReflectionConfig()
    rl: RLConfig = RLConfig()
    distill: DistillConfig = DistillConfig()
    loop: LoopConfig = LoopConfig()
    seed: int = Field(0, description="the run's seed; policy.seed, gepa.seed and rl.seed default to it")
    run_dir: str = Field("runs/fst", description="where everything is written")

    def stages(self) -> list[StageConfig]:
        return self.schedule or [StageConfig(task=self.task, task_kwargs=self.task_kwargs, cycles=self.loop.cycles)]

    @property
    def total_cycles(self) -> int:
        return sum(stage.cycles for stage in self.stages())

    @model_validator(mode="after")
    def _derive_seeds(self) -> RunConfig:
        for section in (self.policy, self.gepa, self.rl, self.reflection):
            if section.seed is None:
                section.seed = self.seed
        return self

    @model_validator(mode="after")
    def _one_task_source(self) -> RunConfig:
        if bool(self.task) == bool(self.schedule):
            raise ValueError("give either `task` or a continual `schedule` (a list of {task, cycles}), not both")
        if self.schedule and self.rl.lora:
            raise ValueError("a continual schedule with rl.lora is not supported yet; use a full fine-tune")
        return self

    @model_validator(mode="after")
    def _online_judging_reads_rl(self) -> RunConfig:
        if self.gepa.judging == "online" and self.gepa.rollouts != "rl":
            raise ValueError("gepa.judging: online rates proposals by the RL rollouts drawn under them; it needs "
                             "gepa.rollouts: rl (one rollout stream)")
        return self

    @model_validator(mode="after")
    def _distill_needs_training(self) -> RunConfig:
        if self.distill.steps and self.loop.mode == "gepa":
            raise ValueError("distill.steps trains the weights; loop.mode gepa keeps them frozen (use fst, rl or "
                             "gepa-then-rl, or set distill.steps: 0)")
        if self.distill.steps and self.rl.lora:
            raise ValueError("distill with rl.lora is not supported yet; use a full fine-tune")
        return self

    @model_validator(mode="after")
    def _checkpoints_land_on_cycle_ends(self) -> RunConfig:
        if "save_every" not in self.rl.model_fields_set:  # the default follows T: every slow phase ends on one
            self.rl.save_every = math.gcd(self.rl.save_every, self.loop.steps_per_cycle)
        if self.loop.steps_per_cycle % self.rl.save_every:
            raise ValueError(f"rl.save_every ({self.rl.save_every}) must divide loop.steps_per_cycle "
                             f"({self.loop.steps_per_cycle}), so that every slow phase ends on a checkpoint")
        return self


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the field."""


def load_config(path: str | Path, overrides: list[str] | None = None, model: type[BaseModel] | None = None) -> Any:
    """Read YAML, apply `key.sub=value` overrides (values parsed as YAML), validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of fields, got {type(data).__name__}")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. gepa.max_metric_calls=300")
        node = data
        *parents, leaf = key.split(".")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}=...: {'.'.join(parents[: i + 1])} is a value, not a section; "
                                  f"set it directly, e.g. --set {'.'.join(parents[: i + 1])}=...")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}=...: the value is not valid YAML ({e.problem})") from None
    return validate_config(data, model or RunConfig, source=str(path))


def validate_config(data: dict[str, Any], model: type[BaseModel] | None = None, *, source: str = "the config") -> Any:
    """`data` as a validated config, or a `ConfigError` naming every bad field (and, for a typo, the closest)."""
    model = model or RunConfig
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc']))}: {_message(err, model)}" for err in e.errors()]
        raise ConfigError(f"{source} is not a valid config:\n" + "\n".join(lines)) from None


def _message(error: Any, model: type[BaseModel]) -> str:
    """pydantic's message; for an unknown field, the closest known names (a typo is the usual cause)."""
    if error["type"] != "extra_forbidden":
        return error["msg"]
    import difflib

    section: Any = model
    for part in error["loc"][:-1]:
        field = getattr(section, "model_fields", {}).get(part)
        section = field.annotation if field else None
    known = list(getattr(section, "model_fields", {}))
    close = difflib.get_close_matches(str(error["loc"][-1]), known, n=3)
    return "unknown field" + (f"; did you mean {' or '.join(close)}?" if close else f"; known: {', '.join(known)}")
