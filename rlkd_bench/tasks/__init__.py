"""lm-eval tasks for RLKD: ``rlkd_structure``, ``rlkd_diversity`` and the ``rlkd_reasoning`` group
(``rlkd_aime24``, ``rlkd_math500``, ``rlkd_gpqa_diamond``). lm-eval finds them only through
``--include_path "$(rlkd-bench tasks-path)"`` or ``TaskManager(include_path=tasks_path())``."""

from __future__ import annotations

from pathlib import Path

TASK_NAMES = ("rlkd_structure", "rlkd_diversity", "rlkd_aime24", "rlkd_math500", "rlkd_gpqa_diamond")
GROUP_NAMES = ("rlkd_reasoning",)


def tasks_path() -> Path:
    """The folder holding the task YAMLs and their utils.py."""
    return Path(__file__).resolve().parent
