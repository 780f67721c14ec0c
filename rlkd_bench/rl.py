"""The parts of RLKD training and its baselines; ``recipes/train_rlkd.py`` only wires them.

One config system for the three arms, TRL's own: a YAML file read by ``TrlParser`` into
``RLKDScriptArguments`` (data, model size, rewards, structure reward settings), TRL's
``ModelConfig`` and ``GRPOConfig`` (``mode: rlkd`` or ``grpo``) or ``SFTConfig`` (``mode: sft``),
with command-line overrides as ``--key value`` (TRL's form) or ``key=value`` (the Makefile's).
What TRL's parser lacks is checked here before any model loads: an unknown key or a value of the
wrong type is a ConfigError naming the file (or the override) and the key.

- ``rlkd``: GRPO with accuracy, format, tag-count and structure rewards (the paper's method).
- ``grpo``: the baseline GRPO with accuracy and format rewards only.
- ``sft``: the baseline distillation, SFT on the teacher traces
  (prompt -> ``<think>teacher reasoning</think><answer>\\boxed{teacher answer}</answer>``).

All three read the rlkd-data product (``rlkd-bench build-rlkd-data``) and write one checkpoint
dir: weights, tokenizer, ``trainer_state.json`` (the log ``rlkd-bench report`` plots), a model
card and ``manifest.json``; staged in ``<output_dir>.run/`` and renamed into place whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

import yaml

from rlkd_bench.configs import check_value, read_yaml
from rlkd_bench.errors import ConfigError, DataError, RlkdError
from rlkd_bench.products import (
    Manifest,
    datasets_read_only,
    redact_argv,
    render_card,
    runtime_info,
    save_checkpoint,
    write_json,
    write_text,
)
from rlkd_bench.rlkd_data import DATASET_DIR

MODES = ("rlkd", "grpo", "sft")
RLKD_REWARDS = ["accuracy", "format", "tag_count", "structure"]
BASELINE_REWARDS = ["accuracy", "format"]
BUILD_HINT = "rlkd-bench build-rlkd-data --out outputs/rlkd-data"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][\w.]*)=(?P<value>.*)$", re.S)


@dataclass
class RLKDScriptArguments:
    """What the recipe needs beside TRL's ModelConfig and GRPOConfig/SFTConfig."""

    mode: Literal["rlkd", "grpo", "sft"] = field(
        default="rlkd", metadata={"help": "rlkd (structure reward), grpo (accuracy+format) or sft (teacher traces)"})
    dataset: str = field(
        default="outputs/rlkd-data",
        metadata={"help": "rlkd-data product dir, saved dataset, jsonl/parquet file or Hub dataset id"})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config name"})
    dataset_train_split: str = field(default="train", metadata={"help": "split to train on"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N rows"})
    tiny_hidden_size: int = field(default=64, metadata={"help": "model_name_or_path: tiny: hidden size"})
    tiny_layers: int = field(default=2, metadata={"help": "model_name_or_path: tiny: layers"})
    tiny_seed: int = field(default=0, metadata={"help": "model_name_or_path: tiny: weight seed"})
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": f"reward names; default {RLKD_REWARDS} (rlkd) or {BASELINE_REWARDS} (grpo)"})
    structure_decomposer: str = field(
        default="heuristic", metadata={"help": "heuristic, gsrm:<checkpoint> or gsrm:http://HOST:PORT/v1"})
    structure_matcher: str = field(
        default="lexical", metadata={"help": "lexical, exact, embedding or judge:<model or http://HOST:PORT/v1>"})
    structure_normalize: bool = field(default=False, metadata={"help": "divide the reward by n_teacher"})
    structure_timeout_s: float = field(default=120.0, metadata={"help": "limit per reward call (seconds)"})
    structure_gsrm_engine: str | None = field(
        default=None, metadata={"help": "gsrm:<checkpoint> runs on: transformers (default) or vllm"})
    structure_gsrm_max_new_tokens: int | None = field(
        default=None, metadata={"help": "gsrm:<checkpoint>: the longest decomposition it may write (default 4096)"})
    structure_gsrm_model: str | None = field(
        default=None, metadata={"help": "gsrm:http(s)://...: the served model name (default: the only model "
                                        "the server lists)"})
    structure_judge_model: str | None = field(
        default=None, metadata={"help": "judge:http(s)://...: the served model name (default: the only model "
                                        "the server lists)"})
    structure_max_failed_steps: int = field(
        default=3, metadata={"help": "stop (exit 70) after this many steps in a row where the structure reward "
                                     "scored nothing because its GSRM or judge did not answer"})
    structure_engine_options: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "model-access options of the GSRM and judge (JSON on the command line), "
                                        "e.g. {concurrency: 64, timeout_s: 300, api_key_env: VLLM_API_KEY}"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "write the checkpoint into a non-empty output_dir that holds no checkpoint "
                                         "of this mode (its files are kept; same names are replaced)"})

    def __post_init__(self) -> None:
        if isinstance(self.structure_engine_options, str):
            try:
                self.structure_engine_options = json.loads(self.structure_engine_options)
            except json.JSONDecodeError as e:
                raise ValueError(f"structure_engine_options: not JSON: {e.msg}") from None
        if self.structure_engine_options is not None and not isinstance(self.structure_engine_options, dict):
            raise ValueError("structure_engine_options: expected a mapping")

    @property
    def rewards(self) -> list[str]:
        if self.reward_funcs:
            return list(self.reward_funcs)
        return list(RLKD_REWARDS if self.mode == "rlkd" else BASELINE_REWARDS)

    def structure(self) -> dict[str, Any]:
        """Keyword arguments of the structure reward (``get_reward_funcs(..., structure=)``)."""
        out: dict[str, Any] = {"decomposer": self.structure_decomposer, "matcher": self.structure_matcher,
                               "normalize": self.structure_normalize, "timeout_s": self.structure_timeout_s}
        if self.structure_gsrm_engine:
            out["gsrm_engine"] = self.structure_gsrm_engine
        if self.structure_gsrm_max_new_tokens:
            out["gsrm_max_new_tokens"] = self.structure_gsrm_max_new_tokens
        if self.structure_engine_options:
            out["engine_options"] = dict(self.structure_engine_options)
        if self.structure_gsrm_model:
            out["gsrm_model"] = self.structure_gsrm_model
        if self.structure_judge_model:
            out["judge_model"] = self.structure_judge_model
        return out


@dataclass
class RecipeConfig:
    """The parsed config: the three dataclasses, where they came from, and the merged raw values."""

    script: RLKDScriptArguments
    training: Any  # trl.GRPOConfig or trl.SFTConfig
    model: Any  # trl.ModelConfig
    source: str
    raw: dict[str, Any]


# ---- config -----------------------------------------------------------------------------------------


def _training_class(mode: str) -> type:
    from trl import GRPOConfig, SFTConfig

    return SFTConfig if mode == "sft" else GRPOConfig


def _fields(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _parser(classes: tuple[type, ...], source: str) -> Any:
    """TRL's parser, with argparse's print-usage-and-exit turned into a ConfigError that says where."""
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message: str):
            raise ConfigError(f"{source}: {message}")

    return Parser(classes, allow_abbrev=False)  # --max_step must not quietly mean --max_steps


def _split_argv(argv: list[str], known: set[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """(config path, key=value overrides, the rest for argparse)."""
    config, overrides, rest = None, {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a file (recipes/configs/*.yaml)")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif (m := _OVERRIDE.match(arg)) and (m["key"] in known or not (rest and rest[-1].startswith("--"))):
            overrides[m["key"]] = m["value"]
        else:
            rest.append(arg)
        i += 1
    return config, overrides, rest


def _flag_value(rest: list[str], name: str) -> str | None:
    for i, arg in enumerate(rest):
        if arg == f"--{name}" and i + 1 < len(rest):
            return rest[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _unknown_key(key: str, known: dict[str, Any], other: dict[str, Any], mode: str, source: str) -> ConfigError:
    if key in other:
        cls = "an SFTConfig" if mode != "sft" else "a GRPOConfig"
        return ConfigError(f"{source}: key '{key}' is {cls} field; mode '{mode}' trains with "
                           f"{_training_class(mode).__name__}, which has no such field")
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"{source}: unknown key '{key}'{hint}")


def parse_config(argv: list[str]) -> RecipeConfig:
    """``--config FILE`` plus overrides -> the recipe's dataclasses, every key and type checked.

    ``key=value`` overrides are read as YAML values (``reward_funcs=[accuracy,format]``) and
    merged into the file's values before the check; ``--key value`` goes to TRL's parser as usual.
    """
    from trl import GRPOConfig, ModelConfig, SFTConfig

    every = set(_fields(RLKDScriptArguments)) | set(_fields(ModelConfig)) | set(_fields(GRPOConfig)) \
        | set(_fields(SFTConfig))
    config, text_overrides, rest = _split_argv(list(argv), every)
    raw = read_yaml(config) if config else {}
    source = str(config) if config else "<no config file>"
    env = raw.pop("env", None)
    if env is not None and not isinstance(env, dict):
        raise ConfigError(f"{source}: key 'env': expected a mapping of variable names to values")
    overrides: dict[str, Any] = {}
    for key, text in text_overrides.items():
        try:
            overrides[key] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            overrides[key] = text
    mode = str(_flag_value(rest, "mode") or overrides.get("mode") or raw.get("mode") or "rlkd")
    if mode not in MODES:
        raise ConfigError(f"{source}: key 'mode': {mode!r} is not one of {', '.join(MODES)}")
    train_cls = _training_class(mode)
    classes = (RLKDScriptArguments, ModelConfig, train_cls)
    known = {k: v for cls in classes for k, v in _fields(cls).items()}
    other = {k: v for k, v in _fields(_training_class("sft" if mode != "sft" else "rlkd")).items()
             if k not in known}
    checks = [(key, value, source) for key, value in raw.items()]
    checks += [(key, value, f"{source} with override {key}={text_overrides[key]}")
               for key, value in overrides.items()]
    for key, value, where in checks:
        if key not in known:
            raise _unknown_key(key, known, other, mode, where)
        check_value(value, known[key], source=where, key=key)
    merged = {**raw, **overrides}
    where_all = source
    if text_overrides or rest:
        where_all += " with overrides " + " ".join([*(f"{k}={v}" for k, v in text_overrides.items()), *rest])
    parser = _parser(classes, f"command line (config {source})")
    if isinstance(env, dict):
        for k, v in env.items():
            os.environ[str(k)] = str(v)
    parser.set_defaults_with_config(**merged)
    try:
        *objs, leftover = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where_all}: the config does not make a valid {train_cls.__name__}: {e}") from None
    if leftover:
        flags = [a for a in leftover if a.startswith("-")] or leftover
        close = difflib.get_close_matches(flags[0].lstrip("-").split("=")[0], list(known), n=1)
        hint = f" (did you mean '--{close[0]}'?)" if close else ""
        raise ConfigError(f"command line: unknown option(s) {' '.join(leftover)}{hint}")
    script, model, training = objs
    _check_together(script, model, training, where_all)
    given = set(merged) | {a[2:].split("=", 1)[0] for a in rest if a.startswith("--")}
    _check_ranges(script, training, where_all, epochs_given="num_train_epochs" in given)
    if not str(_flag_value(rest, "output_dir") or merged.get("output_dir") or "").strip():
        raise ConfigError(f"{where_all}: key 'output_dir': not set; name the checkpoint dir to write "
                          "(e.g. output_dir=outputs/rlkd-tiny)")
    return RecipeConfig(script=script, training=training, model=model, source=source, raw=merged)


def _check_ranges(script: RLKDScriptArguments, training: Any, source: str, *, epochs_given: bool) -> None:
    """Values of the right type that TRL would take and quietly reinterpret (``max_steps=0`` trains a
    step, ``-1`` three epochs, ``max_train_samples=0`` every row, a negative learning rate crashes)."""
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: key '{key}': {why}")

    if training.max_steps == 0 or training.max_steps < -1:
        raise bad("max_steps", f"{training.max_steps} trains nothing; set a number of steps >= 1 "
                               "(or -1 with num_train_epochs to train by epochs)")
    if training.max_steps == -1:  # TRL's "train num_train_epochs epochs", whose default (3) nobody chose
        if not epochs_given:
            raise bad("max_steps", "-1 trains by epochs: set num_train_epochs explicitly too "
                                   "(TRL's default is 3 epochs), or set max_steps >= 1")
        if not training.num_train_epochs > 0:
            raise bad("num_train_epochs", f"{training.num_train_epochs} trains nothing; set it > 0")
    if script.max_train_samples is not None and script.max_train_samples < 1:
        raise bad("max_train_samples", f"{script.max_train_samples} must be >= 1 (or null for every row)")
    if not training.learning_rate > 0:
        raise bad("learning_rate", f"{training.learning_rate} must be > 0")
    if script.structure_max_failed_steps < 1:
        raise bad("structure_max_failed_steps", f"{script.structure_max_failed_steps} must be >= 1")
    if script.reward_funcs is not None:
        if not script.reward_funcs and script.mode != "sft":
            raise bad("reward_funcs", "empty: name the rewards (e.g. [accuracy, format]) or remove the key "
                                      f"for the defaults of mode {script.mode}")
        twice = sorted({n for n in script.reward_funcs if script.reward_funcs.count(n) > 1})
        if twice:
            raise bad("reward_funcs", f"{twice[0]!r} is listed more than once; list each reward once "
                                      "(weigh it with reward_weights)")


def _check_together(script: RLKDScriptArguments, model: Any, training: Any, source: str) -> None:
    """Values each of the right type but wrong together."""
    if not model.model_name_or_path:
        raise ConfigError(f"{source}: key 'model_name_or_path': set 'tiny', a Hub id or a checkpoint dir")
    from rlkd_bench.gsrm_sft import check_model_source

    try:
        check_model_source(model.model_name_or_path, "model_name_or_path")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if script.mode == "sft":
        if script.reward_funcs:
            raise ConfigError(f"{source}: key 'reward_funcs': mode 'sft' trains on the teacher traces, "
                              "without rewards; remove the key or use mode rlkd/grpo")
        return
    names = script.rewards
    from rlkd_bench.reward import rewards as registry

    known = getattr(registry, "REWARD_FUNCS", None)
    unknown = [n for n in names if known is not None and n not in known]
    if unknown:
        raise ConfigError(f"{source}: key 'reward_funcs': unknown reward {unknown[0]!r}; known rewards: "
                          f"{', '.join(known)}")
    if script.mode == "grpo" and "structure" in names:
        raise ConfigError(f"{source}: key 'reward_funcs': the grpo baseline has no structure reward "
                          "(use mode: rlkd)")
    if script.mode == "rlkd" and "structure" not in names:
        raise ConfigError(f"{source}: key 'reward_funcs': mode rlkd needs the structure reward "
                          "(for accuracy/format only use mode: grpo)")
    weights = training.reward_weights
    if weights is not None and len(weights) != len(names):
        raise ConfigError(f"{source}: key 'reward_weights': {len(weights)} weights for {len(names)} "
                          f"rewards {names}")


# ---- data -------------------------------------------------------------------------------------------


def needed_columns(mode: str) -> tuple[str, ...]:
    """What each arm reads besides what its rewards read (the reward registry checks those)."""
    return ("prompt", "teacher_reasoning") if mode == "sft" else ("prompt",)


def load_train_data(script: RLKDScriptArguments) -> tuple[Any, str, bool, dict | None]:
    """(train split, source, is local, the product's manifest) with the arm's columns checked."""
    import datasets

    from rlkd_bench.gsrm_sft import check_jsonl, load_saved_dict, no_split_error

    where = script.dataset
    p = Path(where).expanduser()
    manifest, saved = None, None
    try:
        if p.is_dir():
            saved = p / DATASET_DIR if (p / DATASET_DIR).is_dir() else p
            if (saved / "dataset_dict.json").is_file():
                dd = load_saved_dict(saved)
            elif (saved / "dataset_info.json").is_file():
                dd = datasets.DatasetDict({script.dataset_train_split: datasets.load_from_disk(str(saved))})
            else:
                raise ConfigError(f"{p}: not an rlkd-data product (no {DATASET_DIR}/dataset_dict.json); "
                                  f"make one with: {BUILD_HINT}")
            if (p / "manifest.json").is_file():
                manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
            local = True
        elif p.is_file():
            builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(p.suffix.lower())
            if builder is None:
                raise ConfigError(f"{p}: unsupported data file type {p.suffix!r} (jsonl, json or parquet)")
            if p.suffix.lower() == ".jsonl":
                check_jsonl(p)
            dd = datasets.load_dataset(builder, data_files={script.dataset_train_split: str(p)})
            local = True
        elif _HUB_ID.match(where) and not Path(where.split("/", 1)[0]).is_dir() and not where.startswith((".", "~")):
            dd = datasets.load_dataset(where, script.dataset_config)
            local = False
        else:
            raise ConfigError(f"dataset not found: {where} (make it with: {BUILD_HINT})")
    except RlkdError:
        raise
    except Exception as e:  # datasets raises many types; say what and where
        raise ConfigError(f"could not load the dataset {where!r}: {type(e).__name__}: {e} "
                          f"(a local rlkd-data product is made with: {BUILD_HINT})") from None
    if not isinstance(dd, datasets.DatasetDict):
        dd = datasets.DatasetDict({script.dataset_train_split: dd})
    if script.dataset_train_split not in dd:
        raise no_split_error(where, script.dataset_train_split, list(dd), saved)
    train = dd[script.dataset_train_split]
    cols = set(train.column_names)
    for col in needed_columns(script.mode):
        if col not in cols:
            raise DataError(f"no '{col}' column (has: {', '.join(sorted(cols))}); mode {script.mode} needs it: "
                            f"make the data with {BUILD_HINT}", file=where, field=col)
    if script.mode != "sft":  # the columns each reward reads: the reward registry knows them
        from rlkd_bench.reward import rewards as registry

        registry.check_columns(script.rewards, sorted(cols), dataset=where)
    if script.max_train_samples:
        train = train.select(range(min(script.max_train_samples, len(train))))
    if len(train) == 0:
        raise DataError("the train split is empty", file=where, field=script.dataset_train_split)
    return train, where, local, manifest


def teacher_completion(row: dict[str, Any], *, think_in_prompt: bool = False) -> str:
    """The SFT baseline's target: the teacher's thinking and its boxed final answer, in our format.

    ``think_in_prompt``: the chat template already opens ``<think>`` after the assistant header
    (DeepSeek-R1-Distill's does), so the completion starts inside it rather than opening it twice.
    """
    answer = str(row.get("teacher_final_answer") or row.get("gold") or "").strip()
    boxed = answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    body = f"{row['teacher_reasoning'].strip()}\n</think>\n<answer>\nThe final answer is {boxed}.\n</answer>"
    return body if think_in_prompt else "<think>\n" + body


def opens_think(tokenizer: Any) -> bool:
    """Whether the chat template's generation prompt ends with ``<think>`` (R1-distilled models)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                         tokenize=False)
    return str(text).rstrip().endswith("<think>")


def to_sft_rows(ds: Any, *, think_in_prompt: bool = False) -> Any:
    """rlkd-data rows -> TRL conversational prompt/completion (loss on the completion only)."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        text = teacher_completion(row, think_in_prompt=think_in_prompt)
        return {"prompt": row["prompt"], "completion": [{"role": "assistant", "content": text}]}

    return ds.map(convert, remove_columns=ds.column_names, desc="teacher traces -> SFT rows")


def count_too_long(rows: Any, tokenizer: Any, max_length: int | None) -> int:
    """SFT rows (prompt + completion) longer than ``max_length`` tokens, which TRL's SFTTrainer cuts
    to it (from the end, by default: the teacher's answer goes first)."""
    if not max_length or not len(rows):
        return 0
    from rlkd_bench.gsrm_sft import conversation_lengths

    lengths = conversation_lengths(rows, tokenizer, lambda row: list(row["prompt"]) + list(row["completion"]))
    return sum(n > max_length for n in lengths)


# ---- model and trainer -----------------------------------------------------------------------------


def resolve_model(cfg: RecipeConfig, work_dir: Path) -> str:
    """A path or Hub id for the student; ``tiny`` is built offline (as the GSRM recipe builds it)."""
    from rlkd_bench.configs import GSRMTrainConfig, TinyModelConfig
    from rlkd_bench.gsrm_sft import resolve_model as resolve

    s = cfg.script
    tiny = TinyModelConfig(hidden_size=s.tiny_hidden_size, layers=s.tiny_layers, seed=s.tiny_seed)
    return resolve(GSRMTrainConfig(model=cfg.model.model_name_or_path, tiny=tiny), work_dir)


def load_tokenizer(model: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # not on the Hub, not cached offline, no tokenizer files
        raise ConfigError(f"key 'model_name_or_path': cannot load the tokenizer of {model!r}: {e}") from None
    if not tok.chat_template:
        raise ConfigError(f"model {model!r} has no chat template; the rlkd-data prompts are conversations")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_init_kwargs(cfg: RecipeConfig) -> dict[str, Any]:
    """TRL's ModelConfig as the trainer's ``model_init_kwargs`` (explicit ones win)."""
    m = cfg.model
    kw: dict[str, Any] = {"revision": m.model_revision, "dtype": m.dtype}
    if m.attn_implementation:
        kw["attn_implementation"] = m.attn_implementation
    return {**kw, **(cfg.training.model_init_kwargs or {})}


def reward_functions(script: RLKDScriptArguments, source: str | None = None) -> list[Any]:
    """The named TRL reward functions from the reward registry (rlkd_bench.reward.rewards).

    A bad structure setting (an unknown matcher, a missing checkpoint) is a ConfigError that
    names the config file and the keys it came from.
    """
    from rlkd_bench.reward.rewards import get_reward_funcs

    structure = script.structure() if "structure" in script.rewards else None
    try:
        return get_reward_funcs(script.rewards, structure=structure)
    except ConfigError as e:
        if source is None:
            raise
        keys = "reward_funcs / structure_*" if structure else "reward_funcs"
        raise ConfigError(f"{source}: keys {keys}: {e}") from None


@datasets_read_only()  # the maps here (ours and TRL's) never write beside an input, whoever calls
def build_trainer(cfg: RecipeConfig, run_dir: Path, *, reward_funcs: list[Any] | None = None) -> tuple[Any, dict]:
    """Everything up to ``trainer.train()``. Returns (trainer, info about data and model)."""
    from trl import get_peft_config, get_quantization_config

    script, args = cfg.script, cfg.training
    train, source, local, data_manifest = load_train_data(script)
    funcs = None
    if script.mode != "sft":  # before the model loads: a bad reward setting fails fast
        funcs = reward_funcs if reward_funcs is not None else reward_functions(script, cfg.source)
        preflight_structure(funcs)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = resolve_model(cfg, run_dir)
    tokenizer = load_tokenizer(base, cfg.model.model_revision, getattr(args, "trust_remote_code", False))
    args.output_dir = str(run_dir)
    args.model_init_kwargs = model_init_kwargs(cfg)
    try:
        peft = get_peft_config(cfg.model)
    except ValueError as e:  # use_peft without the peft package
        raise ConfigError(f"{cfg.source}: key 'use_peft': {e}") from None
    info = {"source": source, "local": local, "data_manifest": data_manifest, "base": base,
            "train_rows": len(train), "reward_funcs": funcs or []}
    if script.mode == "sft":
        from trl import SFTTrainer

        rows = to_sft_rows(train, think_in_prompt=opens_think(tokenizer))
        info["truncated_rows"] = count_too_long(rows, tokenizer, args.max_length)
        trainer = SFTTrainer(model=base, args=args, train_dataset=rows,
                             processing_class=tokenizer, peft_config=peft)
        return trainer, info
    from trl import GRPOTrainer

    trainer = GRPOTrainer(model=base, reward_funcs=funcs, args=args, train_dataset=train,
                          processing_class=tokenizer, peft_config=peft,
                          quantization_config=get_quantization_config(cfg.model))
    watch = structure_watch(funcs or [], script, trainer.accelerator)
    if watch is not None:
        trainer.add_callback(watch)
        info["structure_watch"] = watch
    return trainer, info


def preflight_structure(funcs: list[Any]) -> None:
    """Before the model loads: the structure reward's decomposer and LLM judge answer one probe each,
    so an unreachable GSRM or judge stops the run (exit 70) instead of training GRPO in disguise."""
    for func in funcs:
        scorer = getattr(func, "scorer", None)
        if scorer is not None and hasattr(scorer, "preflight"):
            scorer.preflight(gsrm_model_hint="the config key structure_gsrm_model",
                             judge_model_hint="the config key structure_judge_model")


def structure_watch(funcs: list[Any], script: RLKDScriptArguments, accelerator: Any) -> Any | None:
    """A TrainerCallback that stops training when, ``structure_max_failed_steps`` steps in a row, the
    structure reward scored no completion and at least one went unscored because a model did not
    answer (a failed GSRM request, no judge verdict, the call's timeout): its GSRM or judge went away
    mid-run. ``train`` then raises (exit 70) with the reason, and no checkpoint is written. A step
    where nothing reached a model (no ``</think>``, a trace the decomposer could not read) says
    nothing about the models and neither counts nor resets."""
    from transformers import TrainerCallback

    scorers = [f.scorer for f in funcs if hasattr(getattr(f, "scorer", None), "stats")]
    if not scorers:
        return None
    limit = script.structure_max_failed_steps

    def totals() -> tuple[int, int]:
        return sum(s.stats.unavailable for s in scorers), sum(s.stats.scored for s in scorers)

    class StructureWatch(TrainerCallback):
        def __init__(self) -> None:
            self.seen, self.dead_steps, self.reason = totals(), 0, None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            now = totals()
            unanswered, scored = now[0] - self.seen[0], now[1] - self.seen[1]
            self.seen = now
            if accelerator.num_processes > 1:  # every process decides alike, or the others would hang
                import torch

                both = accelerator.reduce(torch.tensor([unanswered, scored], device=accelerator.device), "sum")
                unanswered, scored = (int(x) for x in both.tolist())
            if not unanswered and not scored:
                return control
            self.dead_steps = 0 if scored else self.dead_steps + 1
            if self.dead_steps >= limit:
                from rlkd_bench.llm.redact import redact_text

                errors = sorted({s.stats.last_error for s in scorers if s.stats.last_error})
                self.reason = redact_text(
                    f"the structure reward scored no completion in {limit} steps in a row, its models not "
                    f"answering (up to step {state.global_step}; structure_max_failed_steps: {limit}): "
                    f"{'; '.join(errors) or 'no reason recorded'}. Check the GSRM and judge "
                    f"(structure_decomposer: {script.structure_decomposer}, structure_matcher: "
                    f"{script.structure_matcher}); no checkpoint was written (the steps saved so far stay in "
                    f"{args.output_dir})")
                control.should_training_stop = True
            return control

    return StructureWatch()


# ---- the checkpoint ---------------------------------------------------------------------------------


def claim_output_dir(cfg: RecipeConfig) -> Any:
    """``products.claim_checkpoint`` for this config (the guard, the run lock, read-only inputs):
    the inputs it protects are the data, the student and a local GSRM or judge checkpoint."""
    from rlkd_bench.products import claim_checkpoint

    s = cfg.script
    inputs = [s.dataset, cfg.model.model_name_or_path]
    for spec in (s.structure_decomposer, s.structure_matcher):
        kind, _, target = str(spec or "").partition(":")
        if kind in ("gsrm", "judge") and target and not target.startswith(("http://", "https://")):
            inputs.append(target)
    return claim_checkpoint(cfg.training.output_dir, f"{s.mode}-checkpoint", inputs=inputs,
                            overwrite=s.overwrite_output_dir)


def checkpoint_manifest(cfg: RecipeConfig, info: dict, metrics: dict[str, Any], wall_time_s: float,
                        command: list[str] | None) -> Manifest:
    m = Manifest(product=f"{cfg.script.mode}-checkpoint")
    if command:
        m.command = redact_argv(command)
    m.add_input("data", info["source"], local=info["local"])
    name = cfg.model.model_name_or_path
    m.add_input("base_model", name if name == "tiny" or not Path(name).exists() else info["base"], local=False)
    params: dict[str, Any] = {"mode": cfg.script.mode, "config_file": cfg.source,
                              "config": json.loads(json.dumps(cfg.raw, default=str))}
    if cfg.script.mode != "sft":
        params["reward_funcs"] = cfg.script.rewards
        params["reward_weights"] = cfg.training.reward_weights
        if "structure" in cfg.script.rewards:
            params["structure"] = cfg.script.structure()
    for func in info.get("reward_funcs", []):
        scorer = getattr(func, "scorer", None)  # the structure reward: what decomposed and judged
        if scorer is not None and hasattr(scorer, "describe"):
            params["structure_scorer"] = described = scorer.describe()
            for part in ("decomposer", "matcher"):
                version = (described.get(part) or {}).get("prompt_version")
                if version:
                    m.prompt_versions[f"structure_{part}"] = version
        if isinstance(getattr(func, "counts", None), dict):  # completions scored / failed, by cause
            m.counts.update({f"structure_{k}": int(v) for k, v in func.counts.items()})
    params["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    dm = info.get("data_manifest")
    if dm:
        params["data_manifest"] = {k: dm.get(k) for k in ("product", "created", "counts", "params", "inputs")}
        m.prompt_versions = {**{f"data_{k}": v for k, v in (dm.get("prompt_versions") or {}).items()},
                             **m.prompt_versions}
    params["runtime"] = runtime_info(seed=cfg.training.seed)  # what the figures depend on beyond the config
    m.params = params
    m.counts = {"train_rows": info["train_rows"], "steps": int(metrics.get("global_step", 0)), **m.counts}
    if "truncated_rows" in info:  # the SFT arm: rows TRL cut to max_length
        m.counts["truncated_rows"] = int(info["truncated_rows"])
    m.wall_time_s = round(wall_time_s, 2)
    return m


ARM_SUMMARY = {
    "rlkd": ("RLKD student", "GRPO with accuracy, format, tag-count and a structure reward that scores how far "
             "the student's reasoning steps follow the teacher's (RLKD, arXiv 2505.16142)."),
    "grpo": ("GRPO baseline", "GRPO with accuracy and format rewards only: the RL baseline RLKD is compared "
             "with (arXiv 2505.16142)."),
    "sft": ("SFT distillation baseline", "Supervised fine-tuning on the teacher's reasoning traces "
            "(`<think>` teacher reasoning `</think><answer>` boxed answer `</answer>`): the distillation "
            "baseline RLKD is compared with (arXiv 2505.16142)."),
}


def model_card(manifest: Manifest, cfg: RecipeConfig, log_history: list[dict], name: str) -> str:
    from rlkd_bench.report import Run, final_table, markdown_table

    title, summary = ARM_SUMMARY[cfg.script.mode]
    run = Run(name=name, path=Path("."), history=log_history,
              mode=cfg.script.mode, global_step=manifest.counts.get("steps"))
    header, rows = final_table([run])
    lines = ["## Final figures", "", "Last logged value of each metric; plot the run with "
             "`rlkd-bench report <this dir> --out DIR`.", "", markdown_table(header, rows)]
    if cfg.script.mode != "sft":
        lines += ["## Rewards", ""] + [
            f"- `{n}`" + (f" × {w:g}" if w is not None else "")
            for n, w in zip(cfg.script.rewards, cfg.training.reward_weights or [None] * len(cfg.script.rewards),
                            strict=True)]
        if "structure" in cfg.script.rewards:
            s = cfg.script.structure()
            lines += ["", f"Structure reward: decomposer `{s['decomposer']}`, matcher `{s['matcher']}`, "
                          f"{'normalised by n_teacher' if s['normalize'] else 'sum of step rewards (the paper)'}."]
    dm = manifest.params.get("data_manifest")
    if dm:
        lines += ["", "## Data", "", f"rlkd-data product made {dm.get('created')}; counts: "
                  + ", ".join(f"{k} {v}" for k, v in (dm.get("counts") or {}).items())]
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(manifest.params["config"], sort_keys=False).rstrip(),
              "```"]
    card_manifest = manifest.to_dict()
    card_manifest["params"] = {k: v for k, v in manifest.params.items()
                               if k in ("mode", "reward_funcs", "reward_weights", "config_file")}
    from rlkd_bench.llm.redact import scrub  # the config and the decomposer URL may carry credentials

    return scrub(render_card(card_manifest, kind="model", title=title, summary=summary, extra="\n".join(lines)))


def _resume_arg(value: Any, run_dir: Path, log=print) -> Any:
    """TRL's ``resume_from_checkpoint``: true/last: the latest in the run dir, if any (said when there
    is none: the run starts fresh); a path: a checkpoint that must be there (ConfigError)."""
    if value in (None, "", False, "false", "False"):
        return None
    if str(value).lower() in ("true", "last"):
        from rlkd_bench.gsrm_sft import last_checkpoint

        last = last_checkpoint(run_dir)
        log(f"resume_from_checkpoint: {value}: resuming from {last}" if last else
            f"resume_from_checkpoint: {value}: no checkpoint to resume in {run_dir}; starting from step 0")
        return str(last) if last else None
    p = Path(str(value)).expanduser()
    if not (p / "trainer_state.json").is_file():
        why = "no such directory" if not p.exists() else "not a trainer checkpoint (no trainer_state.json)"
        raise ConfigError(f"key 'resume_from_checkpoint': {value}: {why}; use a checkpoint-N dir of "
                          f"{run_dir} or 'last'")
    return str(p)


def train(cfg: RecipeConfig, *, command: list[str] | None = None, log=print,
          reward_funcs: list[Any] | None = None) -> dict[str, Any]:
    """Train one arm and write its checkpoint to ``output_dir``; returns a summary dict.

    Trainer state and intermediate checkpoints go to ``<output_dir>.run/``; the final model is
    staged there and renamed into place by the main process, so a crash never leaves a
    half-written checkpoint at ``output_dir``.
    """
    t0 = time.time()
    out = Path(cfg.training.output_dir)
    run_dir = out.with_name(out.name + ".run")
    resume = _resume_arg(cfg.training.resume_from_checkpoint, run_dir, log)
    trainer, info = build_trainer(cfg, run_dir, reward_funcs=reward_funcs)
    main = trainer.is_world_process_zero()
    if main:
        what = ("teacher traces" if cfg.script.mode == "sft"
                else "rewards " + ", ".join(cfg.script.rewards))
        log(f"{cfg.script.mode}: student {cfg.model.model_name_or_path} · data {info['source']} "
            f"({info['train_rows']} rows) · {what}")
        if info.get("truncated_rows"):
            log(f"max_length {cfg.training.max_length}: {info['truncated_rows']} of {info['train_rows']} rows are "
                "longer and are cut to it (the end of the teacher's trace and its answer are lost on those); "
                "counted in manifest.json (truncated_rows)")
    result = trainer.train(resume_from_checkpoint=resume)
    watch = info.get("structure_watch")
    if watch is not None and watch.reason:
        raise RlkdError(watch.reason)
    metrics: dict[str, Any] = {"global_step": result.global_step, "train_loss": result.training_loss,
                               **(result.metrics or {})}
    summary: dict[str, Any] = {"output_dir": str(out), "mode": cfg.script.mode, **metrics}

    def write_meta(stage: Path) -> None:
        trainer.state.save_to_json(str(stage / "trainer_state.json"))
        manifest = checkpoint_manifest(cfg, info, metrics, time.time() - t0, command)
        manifest.files = sorted(p.name for p in stage.iterdir()) + ["README.md", "manifest.json"]
        manifest.write(stage)
        write_text(stage / "README.md", model_card(manifest, cfg, trainer.state.log_history, out.name))

    sha = save_checkpoint(trainer, run_dir, out, write_meta)
    if main:
        summary["sha256"] = sha
        summary["wall_time_s"] = round(time.time() - t0, 1)
        write_json(run_dir / "summary.json", summary)
    trainer.accelerator.wait_for_everyone()
    return summary
