"""The parts of GSRM supervised fine-tuning; ``recipes/train_gsrm.py`` only wires them.

The GSRM learns (problem + raw trace) -> rendered steps. Only the assistant turn (the steps)
carries loss: with TRL's ``assistant_only_loss`` where the chat template has, or TRL can supply,
``{% generation %}`` markers (the tiny model's ChatML, Qwen2.5, Llama 3, ...), otherwise by
turning each conversation into prompt (system + user) and completion (assistant) for TRL's
completion-only loss. Both give labels of -100 outside the steps.

The checkpoint is written whole or not at all (staged, then renamed), with the tokenizer, a
model card and a manifest that records the data manifest, the GSRM prompt version and the config.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench import configs
from rlkd_bench.configs import GSRMTrainConfig
from rlkd_bench.errors import ConfigError, DataError
from rlkd_bench.products import (
    Manifest,
    atomic_dir,
    datasets_read_only,
    redact_argv,
    render_card,
    runtime_info,
    save_checkpoint,
    write_json,
    write_text,
)
from rlkd_bench.prompting import GSRM_PROMPT, load_prompt

PRODUCT = "gsrm-checkpoint"
SFT_SUBDIR = "sft"  # where build-gsrm-data saves the DatasetDict inside its product dir
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class SFTData:
    """The loaded gsrm-sft splits and where they came from."""

    train: Any  # datasets.Dataset
    eval: Any | None
    source: str
    local: bool
    manifest: dict[str, Any] | None = None
    dropped_too_long: int = 0
    eval_dropped_too_long: int = 0
    system_prompt_version: str | None = None
    notes: list[str] = field(default_factory=list)


# ---- data ---------------------------------------------------------------------------------------


def resolve_data_source(data: str | None) -> tuple[str, str]:
    """Classify ``data`` as ('product'|'saved'|'file'|'hub', location); missing paths are errors.

    A string of the form owner/name that is not a local path is taken as a Hub dataset id,
    unless its first component is a local directory (then it was meant as a path).
    """
    if not data:
        raise ConfigError(
            "no data given: set `data:` in the config or pass data=DIR "
            "(make it with: rlkd-bench build-gsrm-data --out DIR)"
        )
    p = Path(data).expanduser()
    if p.is_dir():
        if (p / SFT_SUBDIR / "dataset_dict.json").is_file():
            return "product", str(p)
        if (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file():
            return "saved", str(p)
        raise ConfigError(
            f"{p}: not a gsrm-sft dataset (no {SFT_SUBDIR}/dataset_dict.json or dataset_dict.json); "
            "make one with: rlkd-bench build-gsrm-data --out DIR"
        )
    if p.is_file():
        return "file", str(p)
    first = data.split("/", 1)[0]
    if _HUB_ID.match(data) and not Path(first).is_dir() and not data.startswith((".", "~")):
        return "hub", data
    raise ConfigError(
        f"data directory not found: {data} (make it with: rlkd-bench build-gsrm-data --out {data})"
    )


def load_sft_data(cfg: GSRMTrainConfig) -> SFTData:
    """Load the train (and eval) split of the gsrm-sft product named by ``cfg.data``."""
    import datasets

    kind, where = resolve_data_source(cfg.data)
    manifest = None
    try:
        if kind in ("product", "saved"):
            root = Path(where)
            dd = load_saved_dict(root / SFT_SUBDIR if kind == "product" else root)
            mf = root / "manifest.json"
            if mf.is_file():
                manifest = json.loads(mf.read_text(encoding="utf-8"))
        elif kind == "file":
            suffix = Path(where).suffix.lower()
            builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix)
            if builder is None:
                raise ConfigError(f"{where}: unsupported data file type {suffix!r} (jsonl, json or parquet)")
            if suffix == ".jsonl":
                check_jsonl(where)
            dd = datasets.load_dataset(builder, data_files={cfg.train_split: where})
        else:
            dd = datasets.load_dataset(where, cfg.data_config)
    except (ConfigError, DataError):
        raise
    except Exception as e:  # datasets raises many types; the user needs the source and the reason
        raise ConfigError(f"could not load the gsrm-sft data {where!r}: {type(e).__name__}: {e}") from None
    if not isinstance(dd, datasets.DatasetDict):
        dd = datasets.DatasetDict({cfg.train_split: dd})
    if cfg.train_split not in dd:
        saved = (Path(where) / SFT_SUBDIR if kind == "product" else Path(where)) if kind in ("product", "saved") else None
        raise no_split_error(where, cfg.train_split, list(dd), saved)
    train = dd[cfg.train_split]
    evald = dd[cfg.eval_split] if cfg.eval_split and cfg.eval_split in dd else None
    for name, split in (("train", train), ("eval", evald)):
        if split is not None:
            _check_columns(split, where, name)
    if cfg.max_train_samples:
        train = train.select(range(min(cfg.max_train_samples, len(train))))
    if evald is not None and cfg.max_eval_samples:
        evald = evald.select(range(min(cfg.max_eval_samples, len(evald))))
    if len(train) == 0:
        raise DataError("the train split is empty", file=where, field=cfg.train_split)
    return SFTData(
        train=train, eval=evald, source=where, local=kind != "hub", manifest=manifest,
        system_prompt_version=_system_prompt_version(train),
    )


def load_saved_dict(path: Path) -> Any:
    """``load_from_disk`` for a saved DatasetDict, split by split, leaving out empty splits.

    datasets 5.x saves a zero-row split with no arrow file and then cannot load it (IndexError
    in concat_tables); an empty test split (``--test-size 0``) must not make the data unusable.
    """
    import datasets

    if not (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
    out = {}
    for split in splits:
        state = path / split / "state.json"
        if state.is_file() and not json.loads(state.read_text(encoding="utf-8")).get("_data_files"):
            continue  # an empty split
        out[split] = datasets.load_from_disk(str(path / split))
    return datasets.DatasetDict(out)


def empty_splits(path: str | Path) -> list[str]:
    """The splits a saved DatasetDict lists with no rows (``load_saved_dict`` leaves them out)."""
    path = Path(path)
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    for split in splits:
        state = path / split / "state.json"
        try:
            if state.is_file() and not json.loads(state.read_text(encoding="utf-8")).get("_data_files"):
                out.append(split)
        except (OSError, ValueError, AttributeError):
            continue
    return out


def no_split_error(where: str, split: str, has: Any, saved: str | Path | None) -> Exception:
    """A split that is not there: a DataError when the saved data lists it with 0 rows, else a
    ConfigError naming the splits there are (the key is wrong)."""
    if saved is not None and split in empty_splits(saved):
        return DataError(f"the {split!r} split has 0 rows", file=where, field=split)
    return ConfigError(f"{where}: no split {split!r} (has: {', '.join(has) or 'none'})")


def check_jsonl(path: str | Path) -> None:
    """Read a jsonl file once before ``datasets`` does: it says ``StopIteration`` for an empty file and
    gives no line number for a malformed one. A DataError names the file and the line."""
    from rlkd_bench.sources import _read_jsonl

    p = Path(path)
    rows = 0
    try:
        for _line, rec in _read_jsonl(p):
            if isinstance(rec, DataError):
                raise rec
            rows += 1
    except DataError as e:
        if e.line is None:  # the reader's own wording is about traces
            raise DataError("the file is empty: no rows", file=str(p)) from None
        raise
    if not rows:
        raise DataError("the file is empty: no rows", file=str(p))


def _check_columns(ds: Any, where: str, split: str) -> None:
    cols = set(ds.column_names)
    if "messages" not in cols:
        raise DataError(
            f"the {split} split has no 'messages' column (has: {', '.join(sorted(cols))}); "
            "expected the gsrm-sft product of rlkd-bench build-gsrm-data",
            file=where, field="messages",
        )
    if len(ds):
        roles = [m.get("role") for m in ds[0]["messages"]]
        if not roles or roles[-1] != "assistant" or "user" not in roles:
            raise DataError(
                f"the {split} split's first row has roles {roles}; expected [system,] user, assistant",
                file=where, line=1, field="messages",
            )


def _system_prompt_version(ds: Any) -> str | None:
    """The GSRM prompt version of the data's system turn, named as ``prompting`` names it."""
    if not len(ds):
        return None
    first = ds[0]["messages"][0]
    if first.get("role") != "system":
        return None
    text = str(first.get("content", "")).strip()
    current = load_prompt(GSRM_PROMPT)
    if text == current.text:
        return current.version
    return f"custom@{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def to_prompt_completion(ds: Any) -> Any:
    """Conversation -> prompt (turns before the last assistant) + completion (that turn)."""

    def split(row: dict) -> dict:
        msgs = row["messages"]
        return {"prompt": msgs[:-1], "completion": msgs[-1:]}

    return ds.map(split, remove_columns=ds.column_names, desc="prompt/completion")


def drop_too_long(ds: Any, tokenizer: Any, max_length: int | None) -> tuple[Any, int]:
    """Drop rows whose full conversation exceeds ``max_length`` tokens.

    TRL truncates from the right, which would cut the steps (the only part with loss) off a
    long trace; dropping and counting those rows is the honest alternative.
    """
    if max_length is None or not len(ds):
        return ds, 0
    lengths = conversation_lengths(ds, tokenizer)
    kept = ds.select([i for i, n in enumerate(lengths) if n <= max_length])
    return kept, len(ds) - len(kept)


def conversation_lengths(ds: Any, tokenizer: Any, turns: Any = None) -> list[int]:
    """Tokens of each row's conversation under the chat template, as TRL's SFTTrainer tokenizes it
    (``turns(row)``: the messages; default the ``messages`` column)."""
    turns = turns or (lambda row: row["messages"])

    def length(row: dict) -> dict:
        ids = tokenizer.apply_chat_template(turns(row), tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return {"_n_tokens": len(ids)}

    return list(ds.map(length, desc="measuring lengths", remove_columns=ds.column_names)["_n_tokens"])


# ---- model, tokenizer and loss mode -------------------------------------------------------------


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest whole ``checkpoint-N`` in ``run_dir``: transformers writes ``trainer_state.json``
    last, so a checkpoint cut short by Ctrl-C or a crash has none and is passed over (TRL's own
    choice, the highest N, would fail to load it)."""
    found = [(int(p.name.rsplit("-", 1)[1]), p) for p in run_dir.glob("checkpoint-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found)[1] if found else None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_model_source(name: str, key: str) -> None:
    """Before anything loads: a model named by a path must be a model dir there (with its tokenizer);
    anything else must read as a Hub id. ConfigError naming ``key`` otherwise."""
    if name == "tiny":
        return
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(f"key '{key}': {name}: not a model dir (no config.json)")
        if not any((p / f).is_file() for f in _TOKENIZER_FILES):
            raise ConfigError(f"key '{key}': {name}: the model dir has no tokenizer ({', '.join(_TOKENIZER_FILES[:2])}); "
                              "save the tokenizer with the model (tokenizer.save_pretrained(DIR))")
        return
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or not _HUB_ID.match(name) and "/" in name:
        raise ConfigError(f"key '{key}': model not found: {name} (no such directory; a Hub id reads owner/name)")


def resolve_model(cfg: GSRMTrainConfig, work_dir: Path) -> str:
    """A path or Hub id for the base model; ``tiny`` is built offline into ``work_dir``."""
    if cfg.model != "tiny":
        p = Path(cfg.model).expanduser()
        if p.exists() and not (p / "config.json").is_file():
            raise ConfigError(f"model {cfg.model!r}: a local dir without config.json")
        return str(p) if p.exists() else cfg.model
    from rlkd_bench.tiny import build_tiny_model

    t = cfg.tiny
    target = work_dir / f"base-tiny-h{t.hidden_size}-l{t.layers}-s{t.seed}"
    if not (target / "config.json").is_file():
        with atomic_dir(target) as tmp:  # several launcher processes may race here
            build_tiny_model(tmp, hidden_size=t.hidden_size, layers=t.layers, seed=t.seed)
    return str(target)


def load_tokenizer(model: str, chat_template: str = "model") -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as e:  # not on the Hub, not cached offline, no tokenizer files
        raise ConfigError(f"key 'model': cannot load the tokenizer of {model!r}: {e}") from None
    if chat_template == "chatml":
        from rlkd_bench.tiny import CHAT_TEMPLATE

        missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tok.get_vocab()]
        if missing:
            raise ConfigError(f"chat_template: chatml needs tokens {missing} that {model!r} lacks")
        tok.chat_template = CHAT_TEMPLATE
    if not tok.chat_template:
        raise ConfigError(
            f"model {model!r} has no chat template; set `chat_template: chatml` in the config"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def choose_loss_mode(tokenizer: Any, requested: str) -> str:
    """'assistant' if TRL can mask to the assistant turn with this template, else 'completion'."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if requested == "completion":
        return "completion"
    supported = has_generation_markers(tokenizer.chat_template)
    if not supported:
        try:
            supported = get_training_chat_template(tokenizer) is not None
        except ValueError:
            supported = False
    if supported:
        return "assistant"
    if requested == "assistant":
        raise ConfigError(
            "loss: assistant needs a chat template with {% generation %} markers or one TRL can patch; "
            "use loss: completion (or auto)"
        )
    return "completion"


def sft_args(cfg: GSRMTrainConfig, run_dir: Path, loss_mode: str, *, has_eval: bool) -> Any:
    """Map the recipe config onto TRL's SFTConfig (extra ``trl:`` keys checked against it)."""
    import dataclasses

    from trl import SFTConfig

    known = {f.name for f in dataclasses.fields(SFTConfig)}
    unknown = sorted(set(cfg.trl) - known)
    if unknown:
        raise ConfigError(f"trl: unknown SFTConfig field(s) {unknown}")
    kwargs: dict[str, Any] = dict(
        output_dir=str(run_dir),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        use_cpu=cfg.use_cpu,
        logging_steps=cfg.logging_steps,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy=cfg.eval_strategy if has_eval else "no",
        eval_steps=cfg.eval_steps,
        report_to=cfg.report_to,
        seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_num_workers,
        assistant_only_loss=loss_mode == "assistant",
        completion_only_loss=loss_mode == "completion",
        packing=False,
        model_init_kwargs={"dtype": cfg.dtype, **({"attn_implementation": cfg.attn_implementation}
                                                   if cfg.attn_implementation else {})},
        save_only_model=False,
        disable_tqdm=False,
    )
    # transformers 5 renamed gradient checkpointing to activation checkpointing; older ones lack it
    ckpt = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    kwargs[ckpt] = cfg.gradient_checkpointing
    if cfg.gradient_checkpointing:
        kwargs[f"{ckpt}_kwargs"] = {"use_reentrant": False}
    kwargs.update(cfg.trl)
    try:
        return SFTConfig(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the config does not make a valid SFTConfig: {e}") from None


@datasets_read_only()  # the maps here (ours and TRL's) never write beside an input, whoever calls
def build_trainer(cfg: GSRMTrainConfig, run_dir: Path) -> tuple[Any, SFTData, str, str]:
    """Everything up to ``trainer.train()``: data, tokenizer, loss mode, SFTConfig, SFTTrainer.

    Returns (trainer, data, loss_mode, base_model).
    """
    from trl import SFTTrainer

    check_model_source(cfg.model, "model")
    data = load_sft_data(cfg)
    base = resolve_model(cfg, run_dir)
    tokenizer = load_tokenizer(base, cfg.chat_template)
    loss_mode = choose_loss_mode(tokenizer, cfg.loss)
    data.train, data.dropped_too_long = drop_too_long(data.train, tokenizer, cfg.max_length)
    if len(data.train) == 0:
        raise DataError(
            f"every train row is longer than max_length={cfg.max_length} tokens", file=data.source
        )
    if data.eval is not None:
        data.eval, data.eval_dropped_too_long = drop_too_long(data.eval, tokenizer, cfg.max_length)
        if len(data.eval) == 0:
            data.eval = None
    train, evald = data.train, data.eval
    if loss_mode == "completion":
        train = to_prompt_completion(train)
        evald = to_prompt_completion(evald) if evald is not None else None
    args = sft_args(cfg, run_dir, loss_mode, has_eval=evald is not None)
    trainer = SFTTrainer(
        model=base, args=args, train_dataset=train, eval_dataset=evald, processing_class=tokenizer
    )
    return trainer, data, loss_mode, base


# ---- the checkpoint: weights, card, manifest ---------------------------------------------------


def claim_output_dir(cfg: GSRMTrainConfig) -> Any:
    """``products.claim_checkpoint`` for this config (the guard, the run lock, read-only inputs),
    protecting the data and the base model."""
    from rlkd_bench.products import claim_checkpoint

    return claim_checkpoint(cfg.output_dir, PRODUCT, inputs=[str(cfg.data or ""), cfg.model],
                            overwrite=cfg.overwrite_output_dir)



def checkpoint_manifest(cfg: GSRMTrainConfig, data: SFTData, base: str, loss_mode: str,
                        metrics: dict[str, Any], wall_time_s: float,
                        command: list[str] | None = None) -> Manifest:
    m = Manifest(product=PRODUCT)
    if command:
        m.command = redact_argv(command)
    m.add_input("data", data.source, local=data.local)
    m.add_input("base_model", cfg.model if cfg.model == "tiny" else base, local=False)
    m.params = {"config": configs.to_dict(cfg), "loss_mode": loss_mode,
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                "runtime": runtime_info(seed=cfg.seed)}  # what the figures depend on beyond the config
    if data.manifest:
        m.params["data_manifest"] = {
            k: data.manifest.get(k) for k in ("product", "created", "counts", "prompt_versions", "inputs")
        }
    current = load_prompt(GSRM_PROMPT).version
    m.prompt_versions = {GSRM_PROMPT: data.system_prompt_version or current}
    if data.system_prompt_version and data.system_prompt_version != current:
        data.notes.append(
            f"the data's system prompt ({data.system_prompt_version}) is not the packaged GSRM prompt "
            f"({current}); the gsrm decomposer sends the packaged one"
        )
    m.counts = {
        "train_rows": len(data.train),
        "eval_rows": len(data.eval) if data.eval is not None else 0,
        "dropped_too_long": data.dropped_too_long,
        "eval_dropped_too_long": data.eval_dropped_too_long,
        "steps": int(metrics.get("global_step", 0)),
    }
    m.wall_time_s = round(wall_time_s, 2)
    return m


def model_card(manifest: Manifest, cfg: GSRMTrainConfig, log_history: list[dict], notes: list[str]) -> str:
    losses = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    lines = ["## Training", "",
             f"Loss on the assistant turn only (mode: `{manifest.params['loss_mode']}`).", ""]
    if losses:
        shown = losses if len(losses) <= 12 else losses[:: max(1, len(losses) // 12)] + [losses[-1]]
        lines += ["| step | train loss |", "|---:|---:|"] + [f"| {s} | {v:.4f} |" for s, v in shown]
    evals = [h for h in log_history if "eval_loss" in h]
    if evals:
        lines += ["", f"Final eval loss: {evals[-1]['eval_loss']:.4f}"]
    dm = manifest.params.get("data_manifest")
    if dm:
        lines += ["", "## Data", "", f"gsrm-sft product made {dm.get('created')}; counts: "
                  + ", ".join(f"{k} {v}" for k, v in (dm.get("counts") or {}).items())]
        for name, ver in (dm.get("prompt_versions") or {}).items():
            lines.append(f"- data prompt `{name}`: `{ver}`")
    lines += ["", "## Use", "", "```bash",
              "rlkd-bench build-rlkd-data --decomposer gsrm:<this checkpoint or a vllm serve URL>",
              "```", "", "## Config", "", "```yaml", configs.dump_yaml(cfg).rstrip(), "```"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    card_manifest = manifest.to_dict()
    shown_metrics = ("global_step", "epoch", "train_loss", "eval_loss", "eval_mean_token_accuracy")
    card_manifest["params"] = {"loss_mode": manifest.params["loss_mode"]} | {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in manifest.params["metrics"].items() if k in shown_metrics
    }
    from rlkd_bench.llm.redact import scrub  # the config may name a data or model URL with credentials

    return scrub(render_card(
        card_manifest, kind="model", title="GSRM: Generative Structure Reward Model",
        summary=("Fine-tuned to rewrite a reasoning trace as steps of meta-reasoning, sub-problem "
                 "and answer (RLKD, arXiv 2505.16142). Input: the GSRM prompt as system turn, "
                 "problem and trace as user turn; output: `[Meta-reasoning i]` / `[Sub-problem i]` "
                 "/ `[Answer i]` steps and a final-answer line."),
        extra="\n".join(lines),
    ))


def train(cfg: GSRMTrainConfig, *, command: list[str] | None = None, log=print) -> dict[str, Any]:
    """Fine-tune and write the checkpoint to ``cfg.output_dir``; returns a summary dict.

    Trainer state and intermediate checkpoints go to ``<output_dir>.run/``; the final model is
    staged there and renamed into place by the main process, so a crash never leaves a
    half-written checkpoint at ``output_dir``.
    """
    t0 = time.time()
    out = Path(cfg.output_dir)
    run_dir = out.with_name(out.name + ".run")
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer, data, loss_mode, base = build_trainer(cfg, run_dir)
    main = trainer.is_world_process_zero()
    if main:
        log(f"GSRM SFT: base {cfg.model} · data {data.source} · {len(data.train)} train rows "
            f"({data.dropped_too_long} dropped as longer than {cfg.max_length} tokens) · loss on the "
            f"assistant turn ({loss_mode} mode)")
        if data.dropped_too_long or data.eval_dropped_too_long:
            log(f"max_length {cfg.max_length}: {data.dropped_too_long} of "
                f"{len(data.train) + data.dropped_too_long} train rows and {data.eval_dropped_too_long} eval rows "
                "are longer and were left out (truncating would cut the steps, the only part with loss); "
                "counted in manifest.json (dropped_too_long, eval_dropped_too_long)")
    resume = last_checkpoint(run_dir) if cfg.resume_from_checkpoint else None
    if cfg.resume_from_checkpoint and main:
        log(f"resume_from_checkpoint: resuming from {resume}" if resume else
            f"resume_from_checkpoint: no checkpoint to resume in {run_dir}; starting from step 0")
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics: dict[str, Any] = {"global_step": result.global_step, "train_loss": result.training_loss}
    if data.eval is not None:
        metrics.update(trainer.evaluate())
    summary = {"output_dir": str(out), "loss_mode": loss_mode, **metrics}

    def write_meta(stage: Path) -> None:
        manifest = checkpoint_manifest(cfg, data, base, loss_mode, metrics, time.time() - t0, command)
        manifest.files = sorted(p.name for p in stage.iterdir()) + ["README.md", "manifest.json"]
        manifest.write(stage)
        write_text(stage / "README.md", model_card(manifest, cfg, trainer.state.log_history, data.notes))
        write_json(stage / "train_log.json", trainer.state.log_history)

    sha = save_checkpoint(trainer, run_dir, out, write_meta)
    if main:
        summary["sha256"] = sha
        for note in data.notes:
            log(f"note: {note}")
    trainer.accelerator.wait_for_everyone()
    return summary
