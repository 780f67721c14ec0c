"""A non-editable install: the wheel holds every module, prompt, bundled data file and task YAML,
and the installed package finds its prompts and data with the source tree out of reach.

The prompts live at the top level (prompts/) and ship as the package ``rlkd_bench.prompts``
through setuptools' package-dir, not through a symlink that a checkout without symlinks loses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlkd_bench"


def _shipped_sources() -> dict[str, Path]:
    """What the wheel must hold, by its path in the wheel: every file of the package folder (no
    caches) and every prompt file."""
    want = {}
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            want[path.relative_to(ROOT).as_posix()] = path
    for path in (ROOT / "prompts").glob("*.txt"):
        want[f"rlkd_bench/prompts/{path.name}"] = path
    return want


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PACKAGE, src / "rlkd_bench", ignore=ignore, symlinks=True)
    shutil.copytree(ROOT / "prompts", src / "prompts", ignore=ignore, symlinks=True)
    dist = tmp / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         str(src), "-w", str(dist)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    (whl,) = dist.glob("rlkd_bench-*.whl")
    return whl


def test_no_symlinks_in_the_package():
    links = [p for p in [PACKAGE, *PACKAGE.rglob("*")] if p.is_symlink()]
    assert not links, f"symlinks are lost by checkouts without symlink support: {links}"


def test_the_wheel_holds_every_module_prompt_data_file_and_task(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    want = _shipped_sources()
    missing = sorted(set(want) - names)
    assert not missing, (
        f"not in the wheel: {missing}; list a new package folder in [tool.setuptools] packages and its "
        "data files in [tool.setuptools.package-data] (pyproject.toml)")
    # the sets the issue names, so an empty folder cannot pass unnoticed
    assert {n for n in want if n.startswith("rlkd_bench/prompts/")} >= {
        "rlkd_bench/prompts/gsrm.txt", "rlkd_bench/prompts/annotate_math.txt"}
    assert any(n.startswith("rlkd_bench/data/") and n.endswith(".jsonl") for n in names)
    assert any(n.startswith("rlkd_bench/tasks/") and n.endswith(".yaml") for n in names)
    with zipfile.ZipFile(wheel) as z:  # the bytes, not only the names
        for name in ("rlkd_bench/prompts/gsrm.txt", "rlkd_bench/data/traces.jsonl"):
            assert z.read(name) == want[name].read_bytes()


def test_the_installed_wheel_finds_prompts_and_data_without_the_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    prompts = sorted(p.stem for p in (ROOT / "prompts").glob("*.txt"))
    # -I: no PYTHONPATH, no user site, no script dir; the installed copy goes first on sys.path so
    # it wins over the editable install of this checkout
    probe = f"""
import json, sys
sys.path.insert(0, {str(target)!r})
import rlkd_bench
from importlib import resources
from rlkd_bench.prompting import load_prompt, prompts_dir
from rlkd_bench.tiny import bundled_text
texts = bundled_text()
print(json.dumps({{
    "package": rlkd_bench.__file__,
    "prompts_dir": str(prompts_dir() / "gsrm.txt"),
    "versions": {{n: load_prompt(n).version for n in {prompts!r}}},
    "prompt_texts": sum(any(load_prompt(n).text in t for t in texts) for n in {prompts!r}),
    "traces": (resources.files("rlkd_bench") / "data" / "traces.jsonl").is_file(),
    "tasks": sorted(p.name for p in (resources.files("rlkd_bench") / "tasks").iterdir()
                    if p.name.endswith(".yaml")),
}}))
"""
    run = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["package"].startswith(str(target)), got["package"]
    assert got["prompts_dir"].startswith(str(target)), got["prompts_dir"]  # not the checkout's prompts/
    from rlkd_bench.prompting import load_prompt

    assert got["versions"] == {n: load_prompt(n).version for n in prompts}  # the same bytes
    from rlkd_bench.tiny import TOKENIZER_PROMPTS

    assert got["prompt_texts"] == len(TOKENIZER_PROMPTS)  # the tiny tokenizer finds its prompts installed
    assert got["traces"]
    assert got["tasks"] == sorted(p.name for p in (PACKAGE / "tasks").glob("*.yaml"))


def test_the_checkout_finds_its_prompts():
    """An editable install or a bare source tree reads prompts/ itself (no copy, no link)."""
    from rlkd_bench.prompting import prompts_dir

    found = {p.name for p in prompts_dir().iterdir() if p.name.endswith(".txt")}
    assert found == {p.name for p in (ROOT / "prompts").glob("*.txt")}
