"""Fine-tune the GSRM (RLKD's Generative Structure Reward Model) with TRL's SFTTrainer.

The recipe only wires: the config dataclass and the training parts live in the library
(``rlkd_bench.configs``, ``rlkd_bench.gsrm_sft``).

    python recipes/train_gsrm.py --config recipes/configs/gsrm_tiny.yaml data=outputs/gsrm-data
    accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 8 \\
        recipes/train_gsrm.py --config recipes/configs/gsrm_qwen7b.yaml data=DIR output_dir=OUT

Any config key can be overridden as ``key=value`` (dotted for nested keys: ``tiny.layers=4``).
"""

from __future__ import annotations

import argparse
import json
import sys

from rlkd_bench.configs import GSRMTrainConfig, load_config
from rlkd_bench.errors import RlkdError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (recipes/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, GSRMTrainConfig, args.overrides)
        from rlkd_bench.gsrm_sft import claim_output_dir, train

        with claim_output_dir(cfg):  # refuses an output_dir it would destroy, locks it, inputs read-only
            summary = train(cfg, command=["python", *sys.argv])
    except RlkdError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C: the README's exit code 130, one line, no traceback
        print("interrupted: no checkpoint was written; the steps saved so far are kept in <output_dir>.run/ "
              "(rerun with resume_from_checkpoint=true to continue from the last one)", file=sys.stderr)
        return 130
    if summary.get("sha256"):  # the main process
        print(json.dumps(summary, indent=2, default=str))
        print(f"GSRM checkpoint written to {summary['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
