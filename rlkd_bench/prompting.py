"""Versioned prompt files and the GSRM's input format.

Prompts live as text files in the top-level ``prompts/`` folder, which a wheel ships as the
package ``rlkd_bench.prompts`` (setuptools ``package-dir``; no symlink, so a checkout without
symlinks works too). A prompt's version is its name plus a hash of its content, so editing a file
changes the version that goes into cache keys, annotations and manifests: nothing cached under the
old text is reused by mistake.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from rlkd_bench.errors import ConfigError

GSRM_PROMPT = "gsrm"
# DeepSeek-R1's recommended zero-shot instruction (no system prompt): the teacher's, and the
# student's with the "r1" prompt style
R1_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def version(self) -> str:
        return f"{self.name}@{hashlib.sha256(self.text.encode('utf-8')).hexdigest()[:10]}"


def prompts_dir() -> Traversable:
    """The folder of prompt files: the installed package ``rlkd_bench.prompts`` (a wheel), else the
    ``prompts/`` folder beside the package (a source checkout, editable install or not: setuptools'
    editable finder cannot map a package folder without ``__init__.py`` to another place)."""
    try:
        found = resources.files("rlkd_bench.prompts")
        if found.is_dir():
            return found
    except (ImportError, OSError):  # not importable here, or a namespace package with no folder
        pass
    return Path(__file__).resolve().parent.parent / "prompts"


@cache
def load_prompt(name: str) -> Prompt:
    """Load ``prompts/<name>.txt``."""
    path = prompts_dir() / f"{name}.txt"
    if not path.is_file():
        raise ConfigError(f"no prompt named {name!r} (looked for {path})")
    return Prompt(name=name, text=path.read_text(encoding="utf-8").strip())


def gsrm_user_text(problem: str, reasoning: str) -> str:
    """The user turn the GSRM sees: the problem and the raw reasoning trace."""
    return f"Problem:\n{problem.strip()}\n\nReasoning trace:\n{reasoning.strip()}"


def gsrm_messages(problem: str, reasoning: str) -> list[dict[str, str]]:
    """Chat messages (system + user) for the GSRM; SFT appends the assistant's rendered steps."""
    return [
        {"role": "system", "content": load_prompt(GSRM_PROMPT).text},
        {"role": "user", "content": gsrm_user_text(problem, reasoning)},
    ]
