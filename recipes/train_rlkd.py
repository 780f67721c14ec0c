"""Train a student with RLKD (GRPO + the structure reward) or one of its baselines, on TRL.

The recipe only wires: the config dataclasses and the training parts live in the library
(``rlkd_bench.rl``; rewards in ``rlkd_bench.reward``). ``mode`` in the config picks the arm:
``rlkd`` (accuracy, format, tag_count, structure), ``grpo`` (accuracy, format) or ``sft``
(distillation on the teacher traces).

    python recipes/train_rlkd.py --config recipes/configs/rlkd_tiny.yaml
    python recipes/train_rlkd.py --config recipes/configs/rlkd_tiny.yaml max_steps=2 --output_dir /tmp/r
    CUDA_VISIBLE_DEVICES=3,4,5,6,7 accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 5 \\
        recipes/train_rlkd.py --config recipes/configs/rlkd_r1distill7b.yaml

Overrides: ``key=value`` (YAML values: ``reward_funcs=[accuracy,format]``) or TRL's ``--key value``.
"""

from __future__ import annotations

import json
import sys

from rlkd_bench.errors import RlkdError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        if args:
            from rlkd_bench.rl import MODES

            print(f"modes: {', '.join(MODES)}; every key of RLKDScriptArguments (rlkd_bench/rl.py), "
                  "trl.ModelConfig and trl.GRPOConfig / trl.SFTConfig may be set.")
        return 0 if args else 2
    try:
        from rlkd_bench.rl import claim_output_dir, parse_config, train

        cfg = parse_config(args)
        with claim_output_dir(cfg):  # refuses an output_dir it would destroy, locks it, inputs read-only
            summary = train(cfg, command=["python", *sys.argv])
    except RlkdError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # Ctrl-C: the README's exit code 130, one line, no traceback
        print("interrupted: no checkpoint was written; the steps saved so far are kept in <output_dir>.run/ "
              "(rerun with resume_from_checkpoint=last to continue from the last one)", file=sys.stderr)
        return 130
    if summary.get("sha256"):  # the main process
        print(json.dumps(summary, indent=2, default=str))
        print(f"{summary['mode']} checkpoint written to {summary['output_dir']} "
              f"({summary['global_step']} steps in {summary['wall_time_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
