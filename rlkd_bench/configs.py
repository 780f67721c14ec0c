"""Recipe configs: YAML files read into dataclasses, checked key by key.

A recipe (``recipes/train_gsrm.py``) is a short script; what it may be told lives here as a
dataclass, so a typo in a YAML file or an override is an error that names the file and the key
before any model is loaded, never a silently ignored setting.

``load_config(path, GSRMTrainConfig, overrides=["learning_rate=1e-5"])`` reads the file, applies
``key=value`` overrides (dotted keys reach nested sections), checks every key against the
dataclass fields and every value against the field's type, then runs the class's ``check()``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from rlkd_bench.errors import ConfigError

T = TypeVar("T")


# ---- the GSRM SFT recipe ------------------------------------------------------------------------


@dataclass
class TinyModelConfig:
    """Shape of the offline tiny model built when ``model: tiny`` (see ``rlkd_bench.tiny``)."""

    hidden_size: int = 64
    layers: int = 2
    seed: int = 0


@dataclass
class GSRMTrainConfig:
    """Everything ``recipes/train_gsrm.py`` needs: model, data, output and the SFT schedule.

    Names follow TRL's ``SFTConfig`` where one exists, so a reader of either recognises them;
    ``trl`` passes any further SFTConfig field through (checked against SFTConfig when the
    recipe runs).
    """

    model: str = "tiny"  # "tiny", a Hub id or a local checkpoint dir
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    data: str | None = None  # gsrm-data product dir, saved DatasetDict, jsonl/parquet file or Hub id
    data_config: str | None = None  # Hub dataset config name
    train_split: str = "train"
    eval_split: str | None = "test"  # None or a missing split: no evaluation
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    output_dir: str = "outputs/gsrm"
    overwrite_output_dir: bool = False  # write into a non-empty output_dir that holds no GSRM (its files are kept)
    # "assistant": TRL's assistant_only_loss ({% generation %} markers, TRL's training template
    # for known families); "completion": system+user as prompt, assistant as completion;
    # "auto": the first of the two that the tokenizer's chat template supports.
    loss: Literal["auto", "assistant", "completion"] = "auto"
    chat_template: Literal["model", "chatml"] = "model"  # "chatml": replace with ChatML + markers
    learning_rate: float = 5e-5
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    per_device_eval_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_length: int | None = 25000
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str | None = None
    use_cpu: bool = False
    logging_steps: int = 1
    save_strategy: Literal["no", "steps", "epoch"] = "no"
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: int | None = None
    report_to: str = "none"
    seed: int = 42
    dataloader_num_workers: int = 0
    resume_from_checkpoint: bool = False
    trl: dict[str, Any] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Problems with values that are each of the right type but wrong together or out of range."""
        problems = []
        if not self.model:
            problems.append("model: must name 'tiny', a Hub id or a checkpoint dir")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio: {self.warmup_ratio} is not in [0, 1)")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate: {self.learning_rate} must be > 0")
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append(f"max_steps: {self.max_steps} trains nothing; set it >= 1, or -1 to train "
                            "num_train_epochs epochs")
        elif self.max_steps == -1 and self.num_train_epochs <= 0:
            problems.append(f"num_train_epochs: {self.num_train_epochs} trains nothing with max_steps: -1; "
                            "set it > 0")
        if not str(self.output_dir).strip():
            problems.append("output_dir: empty; name the checkpoint dir to write")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be >= 1")
        if self.max_length is not None and self.max_length < 16:
            problems.append(f"max_length: {self.max_length} is too small for any GSRM example")
        for name in ("max_train_samples", "max_eval_samples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name}: {v} must be >= 1 (or null for all)")
        if self.bf16 and self.dtype == "float16":
            problems.append("bf16: true does not go with dtype: float16")
        return problems


# ---- the mini study -----------------------------------------------------------------------------

STUDY_ARMS = ("sft", "grpo", "rlkd-gsrm", "rlkd-exact")


@dataclass
class StudyConfig:
    """RLKD in miniature (``recipes/mini_study.py``): the world, the sizes, the steps, the seeds.

    ``quick: true`` replaces the sizes by ``quick_sizes`` (one seed, a few steps): the chain runs
    whole in a few minutes, for the test suite; its figures prove the plumbing, not the method.
    """

    out: str = "outputs/mini-study"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    arms: list[str] = field(default_factory=lambda: list(STUDY_ARMS))
    quick: bool = False
    jobs: int = 2  # stages run side by side
    threads: int = 1  # torch threads of every stage process (fixed: float sums depend on the thread count)
    world_seed: int = 1  # the training world's problems
    eval_world_seed: int = 2  # the held-out world: evaluation and the GSRM's quality
    train_problems: int = 3000
    eval_problems: int = 64
    teacher_samples: int = 4
    vocab_size: int = 768
    student_hidden: int = 128
    student_layers: int = 4
    gsrm_hidden: int = 128
    gsrm_layers: int = 4
    gsrm_steps: int = 400
    warmup_steps: int = 500
    arm_steps: int = 40
    eval_repeats: int = 4  # k samples per eval problem (pass@k, distinct structures)
    max_gen_toks: int = 256
    eval_batch_size: int = 64
    configs: str = "recipes/configs/mini"  # gsrm.yaml, warmup.yaml, sft.yaml, grpo.yaml, rlkd.yaml
    quick_sizes: dict[str, Any] = field(default_factory=lambda: {
        "seeds": [1], "train_problems": 96, "eval_problems": 12, "student_hidden": 64, "student_layers": 2,
        "gsrm_hidden": 64, "gsrm_layers": 2, "gsrm_steps": 12, "warmup_steps": 20, "arm_steps": 2,
        "eval_repeats": 2, "max_gen_toks": 96})

    def check(self) -> list[str]:
        problems = []
        unknown = [a for a in self.arms if a not in STUDY_ARMS]
        if unknown or not self.arms:
            problems.append(f"arms: {unknown or 'none'}; choose from {', '.join(STUDY_ARMS)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: {self.seeds} must be distinct, at least one")
        if self.world_seed == self.eval_world_seed:
            problems.append("world_seed and eval_world_seed must differ: eval problems are held out")
        for name in ("train_problems", "eval_problems", "teacher_samples", "gsrm_steps", "warmup_steps",
                     "arm_steps", "eval_repeats", "max_gen_toks", "jobs", "threads", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: {getattr(self, name)} must be >= 1")
        if self.eval_repeats not in (2, 4, 8):
            problems.append(f"eval_repeats: {self.eval_repeats}; rlkd_diversity reports pass@k for k = 2, 4 or 8")
        unknown = sorted(set(self.quick_sizes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            problems.append(f"quick_sizes: unknown key(s) {unknown}")
        return problems


def load_study_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """The study's config: the file, then with ``quick: true`` its ``quick_sizes``, then the
    overrides (so ``quick=true arm_steps=3`` runs three steps)."""
    import json

    cfg = load_config(path, StudyConfig, overrides)
    if not cfg.quick:
        return cfg
    quick = [f"{k}={json.dumps(v)}" for k, v in cfg.quick_sizes.items()]
    given = {o.partition("=")[0].strip() for o in overrides}
    return load_config(path, StudyConfig, [*(q for q in quick if q.partition("=")[0] not in given), *overrides])


# ---- generic loading ----------------------------------------------------------------------------


def load_config(path: str | Path, cls: type[T], overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read ``path`` (YAML) into ``cls``, apply ``key=value`` overrides, check keys and types.

    Errors are ConfigError naming the file and the key (overrides are named as such).
    """
    path = Path(path)
    raw = read_yaml(path)
    cfg = from_dict(cls, raw, source=str(path))  # the file alone first, so its errors name it
    if not overrides:
        return cfg
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(cls, raw, source=f"{path} with overrides {' '.join(overrides)}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping; a missing file, bad YAML (with its line) or a top level
    that is not a mapping is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, not {type(raw).__name__}")
    return raw


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "<config>", prefix: str = "") -> T:
    """Build ``cls`` from a mapping, rejecting unknown keys and values of the wrong type."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}; known keys: {', '.join(fields)}")
        kwargs[key] = _coerce(value, hints[key], source=source, key=dotted)
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        problems = check()
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(f"{prefix}{p}" for p in problems))
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A config as plain data (for manifests, cards and the YAML echo)."""
    return dataclasses.asdict(obj)


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def check_value(value: Any, tp: Any, *, source: str, key: str) -> Any:
    """Check one value against a field type (as ``load_config`` does), for config readers built on
    other parsers (``rlkd_bench.rl`` on TRL's). Types this module does not know (enums, classes)
    pass unchecked; the parser that owns them checks them."""
    try:
        return _coerce(value, tp, source=source, key=key)
    except _UnsupportedType:
        return value


class _UnsupportedType(ConfigError):
    """A field type ``_coerce`` cannot check (an enum, a class): the owner of the type checks it."""


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value (e.g. learning_rate=1e-5)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if _is_union(tp):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    return {str: "string", int: "integer", float: "number", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _coerce(value: Any, tp: Any, *, source: str, key: str) -> Any:
    """Check ``value`` against ``tp``; allow only the lossless conversions YAML users expect."""

    def bad() -> ConfigError:
        return ConfigError(
            f"{source}: key '{key}': expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )

    if tp is Any:
        return value
    if _is_union(tp):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, source=source, key=key)
            except ConfigError:
                continue
        raise bad()
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{source}: key '{key}': {value!r} is not one of {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad()
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list):
            raise bad()
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "5e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad()
    raise _UnsupportedType(f"{source}: key '{key}': unsupported config type {tp!r}")
