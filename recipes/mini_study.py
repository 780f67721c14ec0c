"""RLKD in miniature: the whole method, end to end, on a seeded world whose structure is known.

The recipe only wires: the stages, their fingerprints and the figures live in
``rlkd_bench.study``; the world in ``rlkd_bench.data.world``; the sizes in the YAML config.

    make mini-study                                   # 3 seeds, CPU, about 20 minutes
    make mini-study QUICK=1                           # one seed, a few steps (the test suite's run)
    python recipes/mini_study.py --config recipes/configs/mini_study.yaml seeds=[1,2,3,4] arm_steps=100

Any config key can be overridden as ``key=value``. A rerun reuses every stage whose inputs did not
change (``OUT/stages.json``) and rebuilds the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlkd_bench.configs import load_study_config
from rlkd_bench.errors import RlkdError

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/mini_study.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_study_config(args.config, args.overrides)
        from rlkd_bench.study import run_study

        venv = sys.prefix if sys.prefix != sys.base_prefix else None  # nested `make` uses this venv
        run_study(cfg, ROOT, venv=venv)
    except RlkdError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
