"""Push a data product or a GSRM checkpoint to the Hugging Face Hub, with a card from its manifest.

A product directory is a model when it holds ``config.json`` (a transformers checkpoint) and a
dataset otherwise; either way it must hold the ``manifest.json`` its command wrote, since the
card is built from it, and its files must still have the sha256 that manifest records (training
records them for every file of a checkpoint). Only the files the manifest lists go up. Saved ``datasets`` dictionaries inside a product (``sft/``, ``dataset/``)
go up as one parquet file per split, declared in the card's ``configs``, so
``datasets.load_dataset("<repo>")`` reads them from the Hub with no extra code.

``--dry-run`` prints the plan (repo, type, files with sizes, the card) and touches no network.
The token comes from ``HF_TOKEN`` or ``hf auth login`` through huggingface_hub and is never
printed or written.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlkd_bench.errors import ConfigError, RlkdError
from rlkd_bench.products import CARD, MANIFEST

TAGS = ["rlkd", "rlkd-bench", "reasoning", "distillation"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SKIP_NAMES = {"__pycache__", ".DS_Store", "training_args.bin"}
TITLES = {
    "gsrm-data": "GSRM training data (RLKD)",
    "rlkd-data": "RLKD training data",
    "traces": "Teacher reasoning traces (RLKD)",
    "gsrm-checkpoint": "GSRM: Generative Structure Reward Model (RLKD)",
}


@dataclass
class PlannedFile:
    path_in_repo: str
    size: int
    local: Path | None = None  # None: made at upload time (card, parquet export)
    note: str = ""


@dataclass
class Export:
    """One split of a saved DatasetDict that goes up as parquet."""

    saved_dir: Path
    config: str
    split: str
    path_in_repo: str
    rows: int


@dataclass
class PublishPlan:
    source: Path
    repo_id: str
    repo_type: str  # "model" | "dataset"
    private: bool
    product: str
    files: list[PlannedFile] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    card: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def describe(self) -> str:
        lines = [
            f"repo:    {self.repo_id} ({self.repo_type}, {'private' if self.private else 'public'})",
            f"source:  {self.source} (product: {self.product})",
            f"files:   {len(self.files)}, {_human(self.total_bytes)}",
        ]
        width = max((len(f.path_in_repo) for f in self.files), default=0)
        for f in self.files:
            note = f"  ({f.note})" if f.note else ""
            lines.append(f"  {f.path_in_repo:<{width}}  {_human(f.size):>9}{note}")
        lines += ["", f"card ({CARD}):", "-" * 60, self.card.rstrip(), "-" * 60]
        return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# ---- planning (offline) -------------------------------------------------------------------------


def detect_product(src: Path) -> tuple[str, dict[str, Any]]:
    """('model' | 'dataset', manifest) for a product dir; clear errors when it is not one."""
    if not src.exists():
        raise ConfigError(f"{src}: no such directory")
    if not src.is_dir():
        raise ConfigError(f"{src}: not a directory (publish takes a product or checkpoint directory)")
    mf = src / MANIFEST
    if not mf.is_file():
        raise ConfigError(
            f"{src}: no {MANIFEST}, so not an rlkd-bench product; publish the directory written by "
            "rlkd-bench traces / build-gsrm-data / build-rlkd-data or make train-gsrm"
        )
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{mf}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{mf}: expected a JSON object")
    return ("model" if (src / "config.json").is_file() else "dataset"), manifest


def check_manifest_files(src: Path, manifest: dict[str, Any]) -> None:
    """The product must be what its manifest says: a run that failed is not published, every file
    the manifest lists must be there, and those with a recorded sha256 must still have it."""
    from rlkd_bench.products import sha256_of

    if manifest.get("status", "ok") != "ok":
        raise ConfigError(f"{src}: the run that wrote this product failed ({manifest.get('error') or 'no reason'}); "
                          "fix it and rerun the command before publishing")
    files = manifest.get("files") or []
    missing = [f for f in files if f not in (MANIFEST, CARD) and not (src / f).exists()]
    if missing:
        raise ConfigError(f"{src}: {MANIFEST} lists files that are not there: {', '.join(missing)}; "
                          "rerun the command that made the product")
    changed = [f for f, digest in (manifest.get("checksums") or {}).items()
               if (src / f).exists() and sha256_of(src / f) != digest]
    if changed:
        raise ConfigError(f"{src}: {', '.join(changed)} changed since {MANIFEST} was written (sha256 differs); "
                          "rerun the command that made the product")


def _listed(rel: Path, manifest: dict[str, Any]) -> bool:
    """Is ``rel`` (a path in the product) one of the files or directories the manifest lists?
    A manifest without a file list (older products) lists everything."""
    files = manifest.get("files")
    if not files:
        return True
    return rel.parts[0] in {f.rstrip("/").split("/")[0] for f in files}


def _saved_dataset_dirs(src: Path) -> list[Path]:
    found = []
    for p in sorted(src.rglob("dataset_dict.json")):
        if not any(part.startswith(".") for part in p.relative_to(src).parts):
            found.append(p.parent)
    return found


def _skipped(rel: Path, saved: list[Path], src: Path) -> bool:
    if any(part.startswith(".") or part in _SKIP_NAMES or part.endswith(".run") for part in rel.parts):
        return True
    if rel.as_posix() == CARD:
        return True  # replaced by the card built from the manifest
    full = src / rel
    return any(full.is_relative_to(d) for d in saved)


def _exports(saved: list[Path], src: Path) -> list[Export]:
    """Parquet exports of each saved DatasetDict: the only one is the 'default' config."""
    out = []
    for d in saved:
        info = json.loads((d / "dataset_dict.json").read_text(encoding="utf-8"))
        config = "default" if len(saved) == 1 else d.relative_to(src).as_posix().replace("/", "_")
        prefix = "data" if config == "default" else f"data/{config}"
        for split in info.get("splits", []):
            rows = _split_rows(d / split)
            if rows == 0:
                continue  # an empty split (e.g. --test-size 0) has no data to export
            out.append(Export(d, config, split, f"{prefix}/{split}-00000-of-00001.parquet", rows))
    return out


def _split_rows(split_dir: Path) -> int:
    """Row count of a saved split (memory-mapped, so cheap even for a big split)."""
    import datasets

    try:
        return datasets.load_from_disk(str(split_dir)).num_rows
    except (OSError, ValueError, IndexError):  # IndexError: datasets' zero-row split without a file
        return 0


def _card_body(src: Path, manifest: dict[str, Any], product: str, kind: str) -> str:
    """The product's own README body (its YAML header dropped), or one rendered from the manifest."""
    readme = src / CARD
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        if text.startswith("---"):
            end = text.find("\n---", 3)
            if end != -1:
                text = text[end + 4 :]
        return text.lstrip("\n")
    from rlkd_bench.products import render_card

    card = render_card(manifest, title=TITLES.get(product, product), kind=kind,
                       summary=f"An rlkd-bench `{product}` product (RLKD, arXiv 2505.16142).")
    return card.split("\n---\n", 1)[1].lstrip("\n")


def build_card(src: Path, repo_type: str, manifest: dict[str, Any], exports: list[Export]) -> str:
    """The Hub card: huggingface_hub card data (tags, configs, base model) + the product's prose."""
    from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

    product = str(manifest.get("product") or ("gsrm-checkpoint" if repo_type == "model" else "dataset"))
    body = _card_body(src, manifest, product, repo_type)
    if repo_type == "model":
        base = (manifest.get("inputs", {}).get("base_model") or {}).get("source")
        data = (manifest.get("inputs", {}).get("data") or {}).get("source")
        data_card = ModelCardData(
            library_name="transformers", pipeline_tag="text-generation", tags=TAGS + [product],
            base_model=base if base and _REPO_ID.match(base) and not Path(base).exists() else None,
            datasets=[data] if data and _REPO_ID.match(data) and not Path(data).exists() else None,
        )
        return str(ModelCard(f"---\n{data_card.to_yaml()}\n---\n\n{body}"))
    configs: dict[str, list[dict[str, str]]] = {}
    for e in exports:
        configs.setdefault(e.config, []).append({"split": e.split, "path": e.path_in_repo})
    card_data = DatasetCardData(
        pretty_name=TITLES.get(product, product), tags=TAGS + [product],
        task_categories=["text-generation"],
        configs=[{"config_name": k, "data_files": v, **({"default": True} if k == "default" else {})}
                 for k, v in configs.items()] or None,
    )
    return str(DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}"))


def plan_publish(directory: str | Path, repo_id: str, *, private: bool = False) -> PublishPlan:
    """Everything publish will do, worked out offline."""
    if not _REPO_ID.match(repo_id or ""):
        raise ConfigError(f"--repo {repo_id!r}: expected a Hub repo id like user/name")
    src = Path(directory).expanduser()
    repo_type, manifest = detect_product(src)
    check_manifest_files(src, manifest)
    # a product goes up as its manifest lists it: files others put beside a checkpoint (a report,
    # notes) stay home
    def listed(rel: Path) -> bool:
        return _listed(rel, manifest)

    saved = [d for d in _saved_dataset_dirs(src) if listed(d.relative_to(src))] if repo_type == "dataset" else []
    exports = _exports(saved, src)
    plan = PublishPlan(source=src, repo_id=repo_id, repo_type=repo_type, private=private,
                       product=str(manifest.get("product") or repo_type), exports=exports)
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if p.is_file() and listed(rel) and not _skipped(rel, saved, src):
            plan.files.append(PlannedFile(rel.as_posix(), p.stat().st_size, local=p))
    for e in exports:
        size = sum(f.stat().st_size for f in (e.saved_dir / e.split).glob("*.arrow"))
        plan.files.append(PlannedFile(e.path_in_repo, size, note=f"parquet export of "
                                      f"{e.saved_dir.relative_to(src).as_posix()}/{e.split}, {e.rows} rows; "
                                      "size is the arrow size"))
    from rlkd_bench.llm.redact import scrub

    plan.card = scrub(build_card(src, repo_type, manifest, exports))  # a card from an older version may hold a secret
    plan.files.append(PlannedFile(CARD, len(plan.card.encode("utf-8")), note="card from manifest.json"))
    if repo_type == "model" and not any(f.path_in_repo.endswith((".safetensors", ".bin")) for f in plan.files):
        raise ConfigError(f"{src}: config.json but no weights (*.safetensors); not a finished checkpoint")
    return plan


# ---- staging and upload ------------------------------------------------------------------------


def stage(plan: PublishPlan, into: str | Path) -> Path:
    """Lay out exactly what goes to the repo under ``into``: links to the files, parquet, card."""
    import datasets

    root = Path(into)
    for f in plan.files:
        if f.local is None:
            continue
        dest = root / f.path_in_repo
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f.local.resolve(), dest)
    for e in plan.exports:
        dest = root / e.path_in_repo
        dest.parent.mkdir(parents=True, exist_ok=True)
        datasets.load_from_disk(str(e.saved_dir))[e.split].to_parquet(str(dest))
    (root / CARD).write_text(plan.card, encoding="utf-8")
    return root


def publish(plan: PublishPlan, *, commit_message: str | None = None) -> str:
    """create_repo + upload_folder (one commit); returns the repo URL. Needs a Hub token."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    check_manifest_files(plan.source, detect_product(plan.source)[1])  # still what was planned
    api = HfApi()
    try:
        url = api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=plan.private, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rlkd-publish-") as tmp:
            folder = stage(plan, tmp)
            api.upload_folder(
                repo_id=plan.repo_id, repo_type=plan.repo_type, folder_path=str(folder),
                commit_message=commit_message or f"rlkd-bench publish: {plan.product}",
            )
    except RlkdError:
        raise
    except Exception as e:  # huggingface_hub raises HTTP errors of many kinds; say what failed, no token
        from rlkd_bench.llm.redact import redact

        raise RlkdError(redact(f"upload to {plan.repo_id} failed: {type(e).__name__}: {e}",
                               (get_token(),))) from None
    return str(url)
