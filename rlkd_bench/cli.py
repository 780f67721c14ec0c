"""The ``rlkd-bench`` command line. Commands parse options and call a stage; nothing else."""

from __future__ import annotations

import click

from rlkd_bench import __version__
from rlkd_bench.errors import RlkdError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RlkdGroup(click.Group):
    """Turns user-facing errors into one red line and a distinct exit code, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RlkdError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; finished rows are kept: rerun the same command to resume.", err=True)
            ctx.exit(130)


@click.group(cls=RlkdGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="rlkd-bench")
def cli() -> None:
    """Build, train and measure RLKD: reasoning distillation with a Generative Structure Reward
    Model (arXiv 2505.16142).

    \b
    The pipeline, one data product per command (each a directory with manifest.json and a card):
      rlkd-bench traces           teacher reasoning traces (bundled, Hub, local, or generated)
      rlkd-bench build-gsrm-data  traces -> step annotations -> GSRM SFT set
      make train-gsrm             the GSRM checkpoint (recipes/train_gsrm.py)
      rlkd-bench build-rlkd-data  RL training set with precomputed teacher steps
      rlkd-bench publish          push a product or checkpoint to the Hugging Face Hub

    \b
    Quick start, offline, in seconds:
      rlkd-bench build-gsrm-data --out outputs/gsrm-data
    """


# ---- foundation: traces, build-gsrm-data -------------------------------------------------------


# ---- GSRM, RLKD data, publish ------------------------------------------------------------------


def main() -> None:
    """Console entry point."""
    cli(prog_name="rlkd-bench")


if __name__ == "__main__":
    main()
