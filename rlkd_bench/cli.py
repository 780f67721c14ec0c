"""The ``rlkd-bench`` command line. Commands parse options and call a stage; nothing else."""

from __future__ import annotations

import click

from rlkd_bench import __version__
from rlkd_bench.build import TraceSpec, build_gsrm_data, build_traces, print_summary
from rlkd_bench.console import summary
from rlkd_bench.errors import EXIT_RUNTIME, ConfigError, RlkdError
from rlkd_bench.sources import FORMATS, parse_field_mappings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RlkdGroup(click.Group):
    """Turns user-facing errors into one red line and a distinct exit code, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RlkdError as e:
            from rlkd_bench.llm.redact import redact_text

            click.secho(f"error: {redact_text(str(e))}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted; finished rows are kept: rerun the same command to resume.", err=True)
            ctx.exit(130)
        except OSError as e:  # the disk or the filesystem refused (full, read-only, permissions)
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            click.secho(f"error: {e.strerror or e}{where}", fg="red", err=True)
            ctx.exit(EXIT_RUNTIME)


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
      make train-rlkd             RLKD (or a baseline) on TRL (recipes/train_rlkd.py)
      rlkd-bench eval             the lm-eval tasks (structure, diversity, the paper's suite)
      rlkd-bench report           plots and tables from training runs and eval results (per arm, over seeds)
      rlkd-bench publish          push a product or checkpoint to the Hugging Face Hub
      make mini-study             all of it, end to end, on a seeded world whose structure is known

    \b
    Quick start, offline, in seconds:
      rlkd-bench build-gsrm-data --out outputs/gsrm-data
    """


# ---- foundation: traces, build-gsrm-data -------------------------------------------------------


def trace_options(f):
    """The options that say where traces come from (shared by the commands that read traces)."""
    opts = [
        click.option("--traces", "source", metavar="SOURCE", default=None,
                     help="Hub dataset id (owner/name), local .jsonl/.json/.parquet/.csv/.tsv file, saved "
                          "dataset dir, folder of data files or traces product dir. Default: the bundled "
                          "traces."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True,
                     help="Input schema; auto detects traces, OpenR1-Math-220k and OpenThoughts."),
        click.option("--field", "fields", multiple=True, metavar="NAME=COLUMN",
                     help="Map a column for a generic table (repeatable): problem, reasoning, answer, "
                          "gold, domain, id."),
        click.option("--split", default="train", show_default=True, help="Dataset split to read."),
        click.option("--config-name", default=None, help="Hub dataset config (e.g. metadata)."),
        click.option("--on-error", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
                     help="stop: fail on the first bad row, before writing anything; skip: record it in "
                          "rejects.jsonl with its reason and go on."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N traces."),
        click.option("--verify/--no-verify", default=False, show_default=True,
                     help="Check each answer against its gold with math-verify; reject misses. (traces "
                          "--generate always does: only verified samples are kept.)"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _trace_spec(source, fmt, fields, split, config_name, on_error, limit, verify) -> TraceSpec:
    return TraceSpec(source=source, fmt=fmt, fields=parse_field_mappings(fields), split=split,
                     config=config_name, on_error=on_error, limit=limit, verify=verify)


def engine_options(f):
    """Options for model engines (OpenAI-compatible servers, the Batch API, local models)."""
    opts = [
        click.option("--base-url", default=None, metavar="URL",
                     help="OpenAI-compatible endpoint (vllm serve, transformers serve, ...). "
                          "Default: api.openai.com."),
        click.option("--api-key-env", default=None, metavar="NAME",
                     help="Environment variable that holds the API key (the key is never written). "
                          "Default: OPENAI_API_KEY, sent to api.openai.com only; another --base-url gets a "
                          "key only when this names it (over https, or plain http to loopback)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Requests in flight at once."),
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=120.0,
                     show_default=True, help="Per-request timeout in seconds."),
        click.option("--max-retries", type=click.IntRange(min=0), default=6, show_default=True,
                     help="Retries per request on 429/5xx, timeouts and dropped connections."),
        click.option("--cache-dir", default=None, metavar="DIR",
                     help="Request cache (default $RLKD_CACHE_DIR or ~/.cache/rlkd-bench)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the request cache."),
        click.option("--batch-api", is_flag=True,
                     help="Use the OpenAI Batch API (half price; the batch id is kept in --out, so a "
                          "rerun resumes the same batch)."),
        click.option("--max-cost", "max_cost_usd", type=click.FloatRange(min=0), default=None,
                     metavar="USD", help="Stop cleanly before the run's cost would pass this."),
        click.option("--price", "prices", multiple=True, metavar="MODEL=IN,OUT",
                     help="Override a price: USD per 1M input and output tokens (repeatable)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _check_test_size(ctx: click.Context, param: click.Parameter, value: float) -> float:
    from rlkd_bench.products import check_test_size

    try:
        return check_test_size(value)
    except ConfigError as e:
        raise click.BadParameter(str(e).removeprefix("--test-size "), ctx=ctx, param=param) from None


def split_options(f):
    """--seed and --test-size of the train/test split a product is saved with."""
    f = click.option("--test-size", type=click.FloatRange(min=0), default=0.1, show_default=True,
                     callback=_check_test_size,
                     help="Test split: a fraction (<1) or a whole number of rows (>=1).")(f)
    return click.option("--seed", type=int, default=0, show_default=True,
                        help="Seed of the train/test split.")(f)


def _engine_options(out, base_url, api_key_env, concurrency, timeout_s, max_retries, cache_dir,
                    no_cache, batch_api, max_cost_usd, prices, progress=True):
    from rlkd_bench.llm.base import EngineOptions

    price_table = None
    if prices:
        from rlkd_bench.llm.cost import parse_prices

        price_table = parse_prices(prices)
    return EngineOptions(
        base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, timeout_s=timeout_s,
        max_retries=max_retries, cache_dir=cache_dir, use_cache=not no_cache, batch_api=batch_api,
        batch_dir=str(out), max_cost_usd=max_cost_usd, prices=price_table, progress=progress,
    )


@cli.command("traces")
@trace_options
@click.option("--out", type=click.Path(file_okay=False), default="outputs/traces", show_default=True,
              help="Output directory (the traces product).")
@click.option("--generate", is_flag=True,
              help="Sample new traces from --teacher for the problems in --traces (each needs a gold "
                   "answer); keep the ones math-verify accepts.")
@click.option("--teacher", default=None, metavar="ENGINE:MODEL",
              help="Teacher for --generate: openai:<model> (--base-url for vllm/transformers serve), "
                   "transformers:<path> or vllm:<path>.")
@click.option("--n", "n_samples", type=click.IntRange(min=1), default=4, show_default=True,
              help="Samples per problem (--generate).")
@click.option("--keep", type=click.Choice(["first", "all"]), default="first", show_default=True,
              help="first: the first correct sample (the paper's rule; later samples are not paid "
                   "for); all: every correct sample.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.6, show_default=True,
              help="Teacher sampling temperature (R1's recommended 0.6).")
@click.option("--top-p", type=click.FloatRange(min=0, max=1), default=0.95, show_default=True,
              help="Teacher nucleus sampling.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=32768, show_default=True,
              help="Longest teacher completion; one that never closes </think> counts as wrong.")
@engine_options
def traces_cmd(source, fmt, fields, split, config_name, on_error, limit, verify, out, generate=False,
               teacher=None, n_samples=4, keep="first", temperature=0.6, top_p=0.95, max_tokens=32768,
               **engine):
    """Normalise teacher reasoning traces into the traces product.

    Reads OpenThoughts-114k (metadata config), OpenR1-Math-220k (the first math-verify-correct
    generation becomes the teacher trace, as in the paper), our own traces, or any table with
    --field mappings; from a Hub id or a local file. Writes OUT/traces.jsonl, rejects.jsonl,
    manifest.json and README.md.

    \b
    Examples:
      rlkd-bench traces --out outputs/traces                       # the bundled traces
      rlkd-bench traces --traces open-r1/OpenR1-Math-220k --limit 1000 --verify
      rlkd-bench traces --traces open-thoughts/OpenThoughts-114k --config-name metadata
      rlkd-bench traces --traces mine.jsonl --field problem=question --field reasoning=cot
      rlkd-bench traces --generate --teacher openai:deepseek-reasoner --traces problems.jsonl --n 4
      rlkd-bench traces --generate --teacher openai:R1 --base-url http://localhost:8000/v1 \\
          --traces open-r1/OpenR1-Math-220k --limit 500 --keep all --max-cost 50
    """
    if generate or teacher:
        if not (generate and teacher):
            raise ConfigError("--generate and --teacher ENGINE:MODEL go together "
                              "(e.g. --generate --teacher openai:deepseek-reasoner)")
        from rlkd_bench.teacher import build_generated_traces

        manifest = build_generated_traces(
            source, out, teacher=teacher, n=n_samples, keep=keep,
            params={"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens},
            options=_engine_options(out, **engine),
            load={"fmt": fmt, "fields": parse_field_mappings(fields) or None, "split": split,
                  "config": config_name, "on_error": on_error, "limit": limit})
        print_summary("traces (generated)", manifest, out)
        click.echo(out)
        return
    spec = _trace_spec(source, fmt, fields, split, config_name, on_error, limit, verify)
    manifest = build_traces(spec, out)
    print_summary("traces", manifest, out)
    click.echo(out)


@cli.command("build-gsrm-data")
@trace_options
@click.option("--annotator", default="heuristic", show_default=True, metavar="SPEC",
              help="heuristic (offline algorithm) or openai:<model> (GPT-4o or any "
                   "OpenAI-compatible model with the domain prompts in prompts/).")
@click.option("--max-tokens", "annotator_max_tokens", type=click.IntRange(min=1), default=4096,
              show_default=True, help="Longest annotation reply (openai:<model> annotators).")
@click.option("--max-invalid-retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Retries of a reply that fails step validation before it goes to rejects.jsonl.")
@engine_options
@click.option("--out", type=click.Path(file_okay=False), default="outputs/gsrm-data", show_default=True,
              help="Output directory (annotations, rejects, sft/, manifest, card).")
@split_options
@click.option("--estimate", is_flag=True, help="Print requests, tokens and cost; call nothing.")
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming what OUT holds.")
@click.option("--retry-rejects", is_flag=True,
              help="Annotate again the rows rejected last time (sent again, not answered from the cache).")
@click.option("--progress/--no-progress", "show_progress", default=True, help="Show progress bars.")
def build_gsrm_data_cmd(source, fmt, fields, split, config_name, on_error, limit, verify, annotator,
                        annotator_max_tokens, max_invalid_retries, out, seed, test_size, estimate, overwrite,
                        retry_rejects, show_progress, **engine):
    """Build the GSRM training set: traces -> step annotations -> SFT conversations.

    Each trace is decomposed into [Meta-reasoning i] / [Sub-problem i] / [Answer i] steps ending in
    "So the final answer is:". Valid annotations go to OUT/annotations.jsonl, invalid ones to
    OUT/rejects.jsonl with the reason, and OUT/sft is a datasets.DatasetDict (train/test) whose
    `messages` column is the GSRM's conversation (system, user: problem + trace, assistant: steps).
    A rerun resumes: finished rows are kept and cached requests are not paid again; a row whose
    trace (problem, reasoning, domain) changed since is annotated again, and the run says which.

    \b
    Examples:
      rlkd-bench build-gsrm-data --out outputs/gsrm-data           # offline, bundled traces
      rlkd-bench build-gsrm-data --annotator openai:gpt-4o --traces outputs/traces --estimate
      rlkd-bench build-gsrm-data --annotator openai:gpt-4o --traces outputs/traces --max-cost 20
      rlkd-bench build-gsrm-data --annotator openai:Qwen/Qwen2.5-72B-Instruct \\
          --base-url http://localhost:8000/v1 --concurrency 64
    """
    spec = _trace_spec(source, fmt, fields, split, config_name, on_error, limit, verify)
    options = {}
    if annotator != "heuristic":
        options["options"] = _engine_options(out, **engine, progress=show_progress)
    if annotator.startswith("openai:"):
        options.update(max_tokens=annotator_max_tokens, max_invalid_retries=max_invalid_retries)
    if estimate:
        from rlkd_bench.decompose import get_decomposer

        decomposer = get_decomposer(annotator, **options)
        if not hasattr(decomposer, "estimate"):
            raise ConfigError(f"--estimate needs an LLM annotator; {annotator!r} calls no model and costs 0")
        summary(f"estimate ({annotator})", decomposer.estimate(spec.load().rows))
        return
    manifest = build_gsrm_data(spec, out, annotator=annotator, annotator_options=options,
                               test_size=test_size, seed=seed, overwrite=overwrite,
                               retry_rejects=retry_rejects, show_progress=show_progress)
    print_summary("build-gsrm-data", manifest, out)
    click.echo(out)


# ---- GSRM, RLKD data, publish ------------------------------------------------------------------


@cli.command("build-rlkd-data")
@trace_options
@click.option("--decomposer", default="heuristic", show_default=True, metavar="SPEC",
              help="Who decomposes the teacher traces (once, here): heuristic, openai:<model> "
                   "(LLM annotator), gsrm:<checkpoint-dir> or gsrm:<http://host:port/v1>.")
@click.option("--gsrm-engine", type=click.Choice(["transformers", "vllm"]), default="transformers",
              show_default=True, help="How a local GSRM checkpoint runs (vllm needs a GPU).")
@click.option("--gsrm-model", default=None, metavar="NAME",
              help="Served model name of a GSRM endpoint (default: the only one it lists).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Longest GSRM reply; a reply cut off here is a reject.")
@engine_options
@click.option("--out", type=click.Path(file_okay=False), default="outputs/rlkd-data", show_default=True,
              help="Output directory (dataset/, rejects.jsonl, manifest, card).")
@split_options
@click.option("--prompt", "prompt_style", type=click.Choice(["rlkd", "r1"]), default="rlkd", show_default=True,
              help="The student's prompt: rlkd (a system turn asking for <think> and <answer>) or r1 (no system "
                   "turn; the problem, then R1's 'Please reason step by step...'). Evaluate with the same "
                   "--prompt.")
@click.option("--progress/--no-progress", "show_progress", default=True, help="Show progress bars.")
def build_rlkd_data_cmd(source, fmt, fields, split, config_name, on_error, limit, verify, decomposer,
                        gsrm_engine, gsrm_model, max_new_tokens, out, seed, test_size, prompt_style, show_progress,
                        **engine):
    """Build the RL training set: problems, prompts, gold answers and teacher steps.

    Each row holds a conversational `prompt` (a system turn asking for <think> reasoning and a
    \\boxed{} answer inside <answer>, then the problem), the gold answer, the teacher's reasoning,
    and the teacher's decomposition into steps, computed once here with --decomposer so the
    structure reward never re-decomposes the teacher. OpenR1-Math-220k rows use the first
    math-verify-correct generation as the teacher trace. Writes OUT/dataset (a DatasetDict with
    train/test), OUT/rejects.jsonl (rows with no gold answer or a failed decomposition, with the
    reason), manifest.json and README.md.

    \b
    Examples:
      rlkd-bench build-rlkd-data --out outputs/rlkd-data           # offline: bundled + heuristic
      rlkd-bench build-rlkd-data --traces open-r1/OpenR1-Math-220k --limit 5000 \\
          --decomposer gsrm:outputs/gsrm-qwen7b --gsrm-engine vllm
      rlkd-bench build-rlkd-data --traces outputs/traces \\
          --decomposer gsrm:http://localhost:8000/v1 --concurrency 64
    """
    from rlkd_bench.rlkd_data import build_rlkd_data, summarize

    spec = _trace_spec(source, fmt, fields, split, config_name, on_error, limit, verify)
    options: dict = {}
    if decomposer != "heuristic":
        options["options"] = _engine_options(out, **engine, progress=show_progress)
    if decomposer.startswith("gsrm:"):
        options.update(engine=gsrm_engine, model=gsrm_model, max_new_tokens=max_new_tokens)
    manifest = build_rlkd_data(spec, out, decomposer=decomposer, decomposer_options=options,
                               test_size=test_size, seed=seed, show_progress=show_progress,
                               prompt_style=prompt_style)
    summarize(manifest, out)
    click.echo(out)


@cli.command("score-decomposer")
@click.option("--decomposer", default="heuristic", show_default=True, metavar="SPEC",
              help="heuristic, openai:<model> (an annotator, with --base-url), gsrm:<checkpoint-dir>, "
                   "gsrm:<http://host:port/v1>, world, or a baseline: paragraphs, oracle, oracle-located.")
@click.option("--set", "sets", default="benchmark", show_default=True, metavar="NAME[,NAME]",
              help="Reference sets: in-sample, held-out, benchmark, synthetic, world (or all).")
@click.option("--matcher", default="lexical", show_default=True, metavar="SPEC",
              help="Who judges 'same' for the structure agreement: exact, lexical[:T], embedding[:T], judge:<spec>.")
@click.option("--gsrm-engine", type=click.Choice(["transformers", "vllm"]), default="transformers",
              show_default=True, help="How a local GSRM checkpoint runs (vllm needs a GPU).")
@click.option("--gsrm-model", default=None, metavar="NAME", help="Served model name of a GSRM endpoint.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Longest GSRM or annotator reply.")
@engine_options
@click.option("--n", "n_generated", type=click.IntRange(min=1), default=50, show_default=True,
              help="Traces per generated set (synthetic: per wording; world).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated sets.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score the first N traces of each set.")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also score heuristic, paragraphs, oracle and oracle-located: the floor and ceilings.")
@click.option("--estimate", is_flag=True, help="Print requests, tokens and cost (annotators); call nothing.")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/decomposer-scores", show_default=True,
              help="Output directory (results.json, samples.jsonl, table.md).")
@click.option("--progress/--no-progress", "show_progress", default=True, help="Show progress bars.")
def score_decomposer_cmd(decomposer, sets, matcher, gsrm_engine, gsrm_model, max_new_tokens, n_generated, seed,
                         limit, baselines, estimate, out, show_progress, **engine):
    """Score a decomposer (a GSRM, an annotator) against reference decompositions.

    Parse rate, step-count error, boundary F1 and structure agreement per field, per domain and
    overall; see rlkd_bench/decompose/score.py. Examples:

    \b
      rlkd-bench score-decomposer --decomposer heuristic --set all
      rlkd-bench score-decomposer --decomposer gsrm:outputs/gsrm --set held-out,benchmark
      rlkd-bench score-decomposer --decomposer openai:gpt-4o --estimate
    """
    from rlkd_bench.decompose.score import command

    options: dict = {}
    engine_opts = _engine_options(out, **engine, progress=show_progress)
    if decomposer.startswith(("gsrm:", "openai:")):
        options["options"] = engine_opts
    if decomposer.startswith("gsrm:"):
        options.update(engine=gsrm_engine, model=gsrm_model, max_new_tokens=max_new_tokens)
    if decomposer.startswith("openai:"):
        options.update(max_tokens=max_new_tokens)
    command(decomposer, sets, matcher=matcher, out=out, options=options, engine_options=engine_opts,
            estimate=estimate, baselines=baselines, n=n_generated, seed=seed, limit=limit, echo=click.echo)


@cli.command("publish")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--repo", "repo_id", required=True, metavar="ID", help="Hub repo id, e.g. you/rlkd-data.")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--dry-run", is_flag=True, help="Print the plan (repo, type, files, card); no network.")
@click.option("--message", default=None, help="Commit message.")
def publish_cmd(directory, repo_id, private, dry_run, message):
    """Push a data product or a GSRM checkpoint to the Hugging Face Hub.

    A directory with config.json goes up as a model repo, any other product as a dataset repo
    (saved datasets as parquet, one file per split, declared in the card so load_dataset reads
    them). The card is built from the product's manifest.json. The token comes from HF_TOKEN or
    `hf auth login` and is never printed or written.

    \b
    Examples:
      rlkd-bench publish outputs/rlkd-data --repo you/rlkd-data --dry-run
      rlkd-bench publish outputs/gsrm-qwen7b --repo you/gsrm-qwen2.5-7b --private
    """
    from rlkd_bench.publish import plan_publish, publish

    plan = plan_publish(directory, repo_id, private=private)
    click.echo(plan.describe())
    if dry_run:
        click.echo("dry run: nothing was uploaded")
        return
    url = publish(plan, commit_message=message)
    click.echo(f"published {plan.repo_type} {plan.repo_id}: {url}")


# ---- evaluation: lm-eval tasks -----------------------------------------------------------------


@cli.command("tasks-path")
def tasks_path_cmd():
    """Print the folder of the RLKD lm-eval tasks, for `lm_eval --include_path`.

    \b
    Example:
      lm_eval --model hf --model_args pretrained=DIR --tasks rlkd_structure \\
          --include_path "$(rlkd-bench tasks-path)" --apply_chat_template
    """
    from rlkd_bench.tasks import tasks_path

    click.echo(str(tasks_path()))


@cli.command("eval")
@click.argument("model")
@click.option("--tasks", "task_list", required=True, metavar="NAMES",
              help="Comma-separated: rlkd_structure, rlkd_diversity, rlkd_reasoning (rlkd_aime24, "
                   "rlkd_math500, rlkd_gpqa_diamond), or any lm-eval task.")
@click.option("--model-backend", type=click.Choice(["hf", "vllm", "local-completions"]), default="hf",
              show_default=True, help="lm-eval model backend (vllm needs a GPU; local-completions a server).")
@click.option("--base-url", default=None, metavar="URL",
              help="Server for local-completions, e.g. http://localhost:8000/v1 (vllm serve). user:pw@ in it "
                   "goes as Basic auth, its query with every request.")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Environment variable that holds the server's key (local-completions). OPENAI_API_KEY goes "
                   "to api.openai.com only; another --base-url gets a key only when this names it (over https, "
                   "or plain http to loopback).")
@click.option("--model-args", default=None, metavar="K=V,...", help="Extra lm-eval model arguments.")
@click.option("--limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Problems per task (N, or a fraction < 1); for smoke tests.")
@click.option("--output-path", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write DIR/results.json and DIR/samples_<task>.jsonl.")
@click.option("--decomposer", default=None, metavar="SPEC",
              help="Who decomposes the model's thinking for the structure metrics: heuristic (default; "
                   "$RLKD_DECOMPOSER), gsrm:<checkpoint> or gsrm:http://host:port/v1.")
@click.option("--matcher", default=None, metavar="SPEC",
              help="Who judges steps the same: lexical (default; $RLKD_MATCHER), exact, embedding, "
                   "judge:http://host:port/v1.")
@click.option("--gsrm-model", default=None, metavar="NAME",
              help="The served model at a gsrm:http(s)://... decomposer (default: the only one it lists; "
                   "$RLKD_GSRM_MODEL).")
@click.option("--judge-model", default=None, metavar="NAME",
              help="The served model at a judge:http(s)://... matcher (default: the only one it lists; "
                   "$RLKD_JUDGE_MODEL).")
@click.option("--eval-data", default=None, metavar="SOURCE",
              help="Problems with teacher steps for rlkd_structure/rlkd_diversity: bundled (default; "
                   "$RLKD_EVAL_DATA), an rlkd-data product dir (its test split), a file or a Hub id.")
@click.option("--prompt", type=click.Choice(["rlkd", "r1"]), default=None,
              help="rlkd: the RLKD training prompt (system turn, <think>/<answer>); r1: no system turn, "
                   "'reason step by step' after the problem. Default: rlkd for the structure tasks, r1 "
                   "for the accuracy suite.")
@click.option("--metadata", "metadata_json", default=None, metavar="JSON",
              help='More task metadata, e.g. \'{"math500_data": "math500.jsonl"}\' for a local copy.')
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Samples per problem for the sampled tasks (default: each task's own).")
@click.option("--max-gen-toks", type=click.IntRange(min=1), default=None,
              help="Longest completion (default: 8192 structure tasks, 32768 accuracy suite).")
@click.option("--batch-size", default="1", show_default=True, help="lm-eval batch size (or auto).")
@click.option("--device", default=None, help="Device for hf (default: cuda when there is one, else cpu).")
@click.option("--chat-template/--no-chat-template", default=True, show_default=True,
              help="Apply the model's chat template (the paper's protocol).")
@click.option("--log-samples/--no-log-samples", default=True, show_default=True,
              help="Keep every completion and its metrics (samples_<task>.jsonl).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (hf, vllm).")
@click.option("--overwrite", is_flag=True,
              help="Replace another model's eval in --output-path (only the files that eval wrote are removed).")
def eval_cmd(model, task_list, model_backend, base_url, api_key_env, model_args, limit, output_path, decomposer, matcher,
             gsrm_model, judge_model, eval_data, prompt, metadata_json, repeats, max_gen_toks, batch_size, device, chat_template,
             log_samples, seed, overwrite):
    """Evaluate MODEL on the RLKD lm-eval tasks (lm_eval.simple_evaluate, tasks folder set).

    \b
    Examples:
      rlkd-bench eval outputs/student --tasks rlkd_structure,rlkd_diversity --limit 20
      rlkd-bench eval deepseek-ai/DeepSeek-R1-Distill-Qwen-7B --tasks rlkd_reasoning \\
          --model-backend vllm --output-path outputs/eval-r1
      rlkd-bench eval outputs/student --tasks rlkd_structure --eval-data outputs/rlkd-data \\
          --decomposer gsrm:http://localhost:8001/v1 --matcher judge:http://localhost:8002/v1
    """
    import json

    from rlkd_bench.evaluate import run_eval, summary_rows

    try:
        metadata = json.loads(metadata_json) if metadata_json else None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--metadata is not valid JSON: {e}") from None
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigError("--metadata must be a JSON object")
    named = {k: v for k, v in {"gsrm_model": gsrm_model, "judge_model": judge_model}.items() if v}
    metadata = {**(metadata or {}), **named} if named else metadata
    tasks = [t.strip() for t in task_list.split(",") if t.strip()]
    n = int(limit) if limit and limit >= 1 else limit
    results = run_eval(model, tasks, backend=model_backend, model_args=model_args, base_url=base_url, limit=n,
                       output_path=output_path, decomposer=decomposer, matcher=matcher, eval_data=eval_data,
                       prompt=prompt, metadata=metadata, repeats=repeats, max_gen_toks=max_gen_toks,
                       batch_size=int(batch_size) if batch_size.isdigit() else batch_size, device=device,
                       chat_template=chat_template, log_samples=log_samples, seed=seed, api_key_env=api_key_env,
                       overwrite=overwrite)
    rows = summary_rows(results)
    rows["wall time (s)"] = results.get("rlkd", {}).get("wall_s", 0.0)
    if output_path:
        rows["results"] = f"{output_path}/results.json"
    summary(f"eval {model}", rows)


@cli.command("report")
@click.argument("run_dirs", nargs=-1, type=click.Path(), metavar="[RUN_DIR]...")
@click.option("--eval", "eval_dirs", multiple=True, type=click.Path(), metavar="DIR",
              help="An `rlkd-bench eval --output-path` dir (results.json, samples_<task>.jsonl); repeat it. "
                   "Named <arm>-seed<N>: arms are summarised over seeds.")
@click.option("--metric", "metrics", multiple=True, metavar="TASK/METRIC",
              help="An eval metric to tabulate and plot, in this order (repeat it); default: all found.")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/report", show_default=True,
              help="Where the PNG plots, table.md, REPORT.md and summary.json go.")
def report_cmd(run_dirs, eval_dirs, metrics, out):
    """Plot training runs side by side and tabulate their final figures; summarise eval results.

    Each RUN_DIR is a checkpoint written by `make train-rlkd` (or any dir with a TRL
    trainer_state.json): every reward component, completion length, structure alignment and its
    detail metrics over steps, one line per run, labelled by run name. No display needed.

    Each --eval DIR is what `rlkd-bench eval ... --output-path DIR` wrote; a DIR named
    <arm>-seed<N> (or <arm>-s<N>) is one seed of an arm. Every metric is given per arm as mean ± sd
    over seeds with a 95% bootstrap interval over eval problems (eval_table.md, eval.png), and every
    pair of arms is compared by a paired test (difference, interval, p, MDE) in REPORT.md.
    RUN_DIRs may be left out when --eval is given.

    \b
    Example:
      rlkd-bench report outputs/rlkd-tiny outputs/grpo-tiny outputs/sft-tiny --out outputs/report
      rlkd-bench report --eval evals/sft-seed1 --eval evals/sft-seed2 --eval evals/grpo-seed1 \\
          --eval evals/grpo-seed2 --metric rlkd_structure/structure_alignment --out outputs/report
    """
    from rlkd_bench.report import write_report

    result = write_report(list(run_dirs), out, eval_dirs=list(eval_dirs), metrics=list(metrics) or None)
    for warning in result.get("warnings", []):
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    rows = {"runs": ", ".join(result["runs"]) or "none",
            "eval arms": ", ".join(result.get("eval", {})) or "none",
            "plots": ", ".join(result["plots"]) or "none"}
    for key, label in (("table", "table"), ("eval_table", "eval table"), ("report", "report")):
        if result.get(key):
            rows[label] = f"{out}/{result[key]}"
    summary("report", rows)
    click.echo(f"{out}/{result['report']}")


def main() -> None:
    """Console entry point."""
    cli(prog_name="rlkd-bench")


if __name__ == "__main__":
    main()
