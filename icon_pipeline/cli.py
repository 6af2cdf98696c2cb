"""The `icon-pipeline` command: one entry point for set-up, runs, the UI and the database."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from icon_pipeline.core.config import ConfigError, load_config
from icon_pipeline.core.database import (
    DatabaseError,
    describe_url,
    embedded_status,
    ensure_database,
    stop_embedded,
    validate_url,
)
from icon_pipeline.core.paths import ENV_DATABASE_URL, get_paths
from icon_pipeline.core.storage import asset_path


class CliError(RuntimeError):
    """An error shown to the user as one line, with a non-zero exit."""


def _prepare_instance_env() -> None:
    """DAGSTER_HOME and the storage URL that dagster_home/dagster.yaml reads."""
    paths = get_paths()
    os.environ.setdefault("DAGSTER_HOME", str(paths.dagster_home))
    paths.dagster_home.mkdir(parents=True, exist_ok=True)
    ensure_database()


def _instance():
    from icon_pipeline.defs.runner import open_instance

    _prepare_instance_env()
    instance, abandoned = open_instance()
    for run_id in abandoned:
        print(f"run {run_id[:8]} ended without recording an end (killed, or its database stopped): failed")
    return instance


def cmd_db(args: argparse.Namespace) -> int:
    external = os.environ.get(ENV_DATABASE_URL)
    if external:
        validate_url(external, ENV_DATABASE_URL)  # one clear line for a malformed URL, whatever the action
    if args.action == "start":
        info = ensure_database()
        print(f"PostgreSQL ready at {describe_url(info.url)}" + (" (embedded)" if info.embedded else ""))
    elif args.action == "stop":
        if external:
            print(f"{ENV_DATABASE_URL} is set: the external server is not managed here")
        else:
            print("stopped" if stop_embedded() else "was not running")
    elif args.action == "status":
        if external:
            info = ensure_database()
            print(f"external server reachable: {describe_url(external)}")
        else:
            print(embedded_status())
            if "running" not in embedded_status():
                return 0
            info = ensure_database(start=False)
            print(f"database: {describe_url(info.url)} (this data root: {get_paths().data_dir})")
        _print_database_contents(info.libpq_url)
    elif args.action == "url":
        # The embedded server has no password; an external URL is the user's own secret.
        print(describe_url(external) if external else ensure_database().url)
    return 0


def _print_database_contents(url: str) -> None:
    """What the database holds: the search index per model (rows counted, HNSW index present), the
    caption and exemplar rows, and Dagster's runs. Never the URL itself (it may carry a password)."""
    import psycopg

    from icon_pipeline.search.channels import CAPTIONS, EXEMPLARS
    from icon_pipeline.search.inventory import dagster_runs, index_inventory

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        tables = index_inventory(conn)
        runs = dagster_runs(conn)
    icon_tables = [t for t in tables if t.row_kind == "icon"]
    if icon_tables:
        print(f"models indexed: {len(icon_tables)}")
        for t in icon_tables:
            rows = "table MISSING" if t.rows is None else f"{t.rows} rows"
            hnsw = ", ".join(t.hnsw_indexes) or "NO HNSW index"
            print(f"  {t.model_id:20} {rows:>14}  dim {t.dim:4}  {t.table_name}  HNSW: {hnsw}")
    else:
        print("models indexed: none (materialize icon_embeddings)")
    for label, model_id, unit, asset in (
        ("caption embeddings", CAPTIONS, "distinct text", "caption_embeddings"),
        ("exemplar drawings", EXEMPLARS, "corpus drawing", "exemplar_embeddings"),
    ):
        entry = next((t for t in tables if t.model_id == model_id), None)
        if entry is None:
            print(f"{label}: none (materialize {asset})")
            continue
        rows = "table MISSING" if entry.rows is None else f"{entry.rows} rows (one per {unit})"
        hnsw = ", ".join(entry.hnsw_indexes) or "NO HNSW index"
        print(f"{label}: {rows}, dim {entry.dim}  HNSW: {hnsw}")
    present = sum(1 for t in tables if t.hnsw_indexes)
    print(f"HNSW indexes present: {present} of {len(tables)} tables")
    if runs is None:
        print("Dagster runs: none (no Dagster storage in this database yet)")
    else:
        detail = ", ".join(f"{count} {status.lower()}" for status, count in runs.items())
        print(f"Dagster runs: {sum(runs.values())}" + (f" ({detail})" if detail else ""))


def cmd_fetch_data(args: argparse.Namespace) -> int:
    """The default library (Tabler) and the open icon sets of `corpus:` and `external:` (npm pack,
    once). A set that cannot be fetched is reported and skipped: its icon_corpus partition fails
    with the reason later, and the rest of the pipeline runs without it."""
    from icon_pipeline.library.sources.icon_sets import PackageFetchError, fetch_icon_set, icon_set
    from icon_pipeline.library.sources.tabler import fetch_tabler

    config = load_config()
    for source in config.sources:
        if source.kind == "tabler":
            package = fetch_tabler(asset_path("tabler_versions"), source.version)
            print(f"tabler {source.version}: {package}")
    for name in [*config.corpus.sets, *config.external.sets]:
        spec = icon_set(name)
        try:
            package = fetch_icon_set(spec, asset_path("icon_set_versions", set=name).parent)
        except PackageFetchError as exc:
            print(
                f"{name} {spec.version}: NOT fetched ({exc}); the pipeline runs without it", file=sys.stderr
            )
            continue
        print(f"{name} {spec.version} ({spec.package}, {spec.role}, {spec.licence}): {package}")
    return 0


def _run_config(defs, path: Path | None) -> dict | None:
    """The run config file read and checked against the jobs (CliError naming the file), or None."""
    from icon_pipeline.defs.runner import RunConfigError, checked_run_config

    if path is None:
        return None
    try:
        return checked_run_config(defs, _read_run_config(path))
    except RunConfigError as exc:  # e.g. a misspelt resource field: Dagster names it
        raise CliError(f"{path}: {exc}") from None


def cmd_materialize(args: argparse.Namespace) -> int:
    from icon_pipeline.definitions import defs
    from icon_pipeline.defs.runner import materialize_assets, selected_keys

    # A bad config, run config or asset name fails before the database is started or a run begins.
    load_config()
    run_config = _run_config(defs, args.run_config)
    selection = None if args.assets == ["*"] else args.assets
    try:
        selected_keys(defs, selection)
    except ValueError as exc:  # the message lists the known assets
        raise CliError(str(exc)) from None
    instance = _instance()
    partitions = [args.partition] if args.partition else None
    summary = materialize_assets(
        defs, instance, selection, partitions, run_config=run_config, on_database_loss=exit_on_database_loss
    )
    _print_summary(summary)
    return _exit_code(summary, args.allow_failed_checks)


def _print_summary(summary) -> None:
    """Runs, then every failed check: an all-green line only when nothing failed."""
    failed = summary.failed_checks
    verdict = "all succeeded" if summary.success else "a run FAILED"
    if summary.success and failed:
        verdict = f"all succeeded, but {len(failed)} check(s) FAILED"
    print(f"\n{len(summary.runs)} run(s), {verdict}:")
    for run in summary.runs:
        where = f" [{run.partition}]" if run.partition else ""
        state = "ok" if run.success else "FAILED"
        print(f"  {state:6} {run.seconds:6.1f}s  {', '.join(run.assets)}{where}")
    if failed:
        print(f"\n{len(failed)} failed check(s) (ERROR: the data is not fit to use; WARN: look at it):")
        for check in failed:
            print(f"  {check.line()}")


def exit_on_database_loss(message: str) -> None:
    """The database is gone mid-run: one line and exit 2 now (nothing more can be recorded; the
    next start marks the run failed), instead of Dagster retrying every event write for minutes."""
    print(f"icon-pipeline: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)


def _exit_code(summary, allow_failed_checks: bool) -> int:
    """1 when a run failed, or an ERROR check failed (unless --allow-failed-checks)."""
    if not summary.success:
        return 1
    return 1 if summary.error_checks and not allow_failed_checks else 0


def _read_run_config(path: Path) -> dict:
    """Dagster run config, as pasted in the launchpad (e.g. the `torchrun` resource's processes).
    YAML as the pipeline config reads it: a duplicate key or a bad alias names the file and line."""
    from icon_pipeline.core.config import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read run config: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        run_config = load_yaml(text, path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if not isinstance(run_config, dict):
        raise CliError(f"{path}: run config must be a mapping such as `resources: {{torchrun: ...}}`")
    return run_config


def cmd_demo(args: argparse.Namespace) -> int:
    from icon_pipeline.definitions import defs
    from icon_pipeline.defs.runner import materialize_assets

    config = load_config()
    # Checked before anything is fetched, started or run: a misspelt `torchrun` field must not
    # surface after an hour of downloads and rendering.
    run_config = _run_config(defs, args.run_config)
    paths = get_paths()
    print(f"config: {paths.config_file} ({len(config.sources)} source(s)); data: {paths.data_dir}")
    cmd_fetch_data(args)
    instance = _instance()
    summary = materialize_assets(
        defs, instance, run_config=run_config, on_database_loss=exit_on_database_loss
    )
    _print_summary(summary)
    if summary.success or asset_path("benchmark_json").exists():
        _print_external_benchmark(asset_path("external_json"))
        _print_benchmark(asset_path("benchmark_json"))
        _print_example_search("hide layer")
    print(f"\nArtifacts are under {paths.data_dir}; runs and metadata are in PostgreSQL.")
    print("Look at them with:  icon-pipeline ui   (then open http://127.0.0.1:3000)")
    return _exit_code(summary, args.allow_failed_checks)


def _print_external_benchmark(report_file: Path) -> None:
    """Queries nobody on the project wrote (other sets' tags and drawings), pooled over the sets."""
    import json

    if not report_file.exists():
        return
    report = json.loads(report_file.read_text())
    rows = [r for r in report["rows"] if r["set"] == "pooled"]
    sets = ", ".join(name for name, info in report["sets"].items() if not info.get("skipped"))
    if not rows:
        return
    print(f"\nExternal benchmark: queries nobody on the project wrote ({sets}; {report_file}), pooled, HNSW:")
    print(f"  {'task':13} {'search':18} {'n':>5} {'R@1':>6} {'R@10':>6}")
    for row in rows:
        print(f"  {row['task']:13} {row['model']:18} {row['n']:5d} {row['R@1']:6.3f} {row['R@10']:6.3f}")
    for name, info in report["sets"].items():
        if info.get("skipped"):
            print(f"  {name}: skipped: {info['skipped']}")


def _print_benchmark(report_file: Path) -> None:
    """The benchmark's headline: hybrid search against its baseline, then each channel (HNSW, all queries)."""
    import json

    if not report_file.exists():
        return
    report = json.loads(report_file.read_text())
    rows = [r for r in report["rows"] if r["subset"] == "all" and r["mode"] != "exact" and r["n_queries"]]
    from icon_pipeline.benchmark.report import BM25_BASELINE, PIXEL_BASELINE
    from icon_pipeline.search.channels import HYBRID

    lead = {HYBRID: 0, BM25_BASELINE: 1, PIXEL_BASELINE: 1}
    print(f"\nInternal benchmark, generated from the project's own vocabulary ({report_file}), HNSW:")
    print(f"  {'task':13} {'search':18} {'n':>5} {'R@1':>6} {'R@10':>6} {'mAP':>6}")
    for task in ("text2img", "semantic2img", "img2img"):
        for row in sorted(
            (r for r in rows if r["task"] == task), key=lambda r: (lead.get(r["model"], 2), r["model"])
        ):
            print(
                f"  {row['task']:13} {row['model']:18} {row['n_queries']:5d} {row['recall@1']:6.3f} "
                f"{row['recall@10']:6.3f} {row['map@30']:6.3f}"
            )
    for comparison in report.get("comparisons", []):
        if comparison["model"] == HYBRID and comparison["baseline"] in (BM25_BASELINE, PIXEL_BASELINE):
            c = comparison
            verdict = "significant" if c["significant"] else "NOT significant"
            print(
                f"  {c['task']}: hybrid R@10 {c['recall@10']:.3f} vs {c['baseline']} "
                f"{c['baseline_recall@10']:.3f} (p = {c['p_value']:.4f}, {verdict})"
            )
    for warning in report.get("warnings", []):
        print(f"  WARNING: {warning}")


def _print_example_search(query: str) -> None:
    """Hybrid search's answer, then keyword search's, side by side as the search app shows them."""
    from icon_pipeline.search.service import NotReadyError, SearchService

    service = SearchService.open()
    try:
        answers = [(f"icon-pipeline search {query!r}", service.text(query, k=5))]
        answers.append((f"icon-pipeline search {query!r} --model bm25", service.text(query, "bm25", 5)))
    except NotReadyError:
        return
    finally:
        service.close()
    for command, hits in answers:
        print(f"\n{command}:")
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank}. {hit.score:.3f}  {hit.name}")


def cmd_ui(args: argparse.Namespace) -> int:
    from icon_pipeline.ui import run_ui

    _prepare_instance_env()
    print(
        f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})",
        flush=True,
    )
    return run_ui(get_paths().repo_root, args.host, args.port, log=lambda line: print(line, flush=True))


def cmd_app(args: argparse.Namespace) -> int:
    from icon_pipeline.apps import AppError, launch

    try:
        launch(args.name, host=args.host, port=args.port)
    except AppError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_lexicon(args: argparse.Namespace) -> int:
    from icon_pipeline.lexicon.mining import lexicon_cli

    return lexicon_cli(args.names_file, sys.stdout)


def quiet_model_loading() -> None:
    """No weight-loading progress bars or load reports on every search: one line of answer is the point."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the CLI works without transformers for keyword search
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


ENV_API_URL = "ICON_PIPELINE_API_URL"  # a running `icon-pipeline api` that searches reuse (warm models)


def _search_via_api(args: argparse.Namespace, url: str) -> dict | None:
    """The search answered by a running API (its models already loaded): the page in
    apps/common.page_json's layout, or None when nothing answers at `url` (the caller searches
    in-process). An answer the API refuses (4xx) is a CliError with its reason."""
    import base64

    import httpx

    from icon_pipeline.apps import AUTH_ENV, parse_auth

    credentials = parse_auth(os.environ.get(AUTH_ENV), AUTH_ENV)
    params: list[tuple[str, str]] = [("k", str(args.k)), ("fold", str(not args.all_variants).lower())]
    params += [("model", args.model)] if args.model else []
    params += [("style", s) for s in args.style] + [("category", c) for c in args.category]
    base = url.rstrip("/") + "/api/search"
    try:
        with httpx.Client(auth=credentials[0] if credentials else None, timeout=60) as client:
            if args.image:
                body = {"image": base64.b64encode(args.image.read_bytes()).decode("ascii")}
                body.update({k: v for k, v in params if k in ("k", "model")})
                body.update(
                    {"fold": not args.all_variants, "styles": args.style, "categories": args.category}
                )
                answer = client.post(base, json=body)
            else:
                answer = client.get(base, params=[("q", args.query), *params])
    except httpx.TransportError:
        return None
    if answer.status_code in (400, 404, 422):
        detail = answer.json().get("detail")
        raise CliError(detail if isinstance(detail, str) else f"the search API refused the query: {detail}")
    if answer.status_code != 200:
        return None  # not ready, or not our API: search here
    page = answer.json()
    page["query"] = _described_query(args)
    return page


def _described_query(args: argparse.Namespace) -> dict:
    if args.image:
        return {"kind": "image", "file": str(args.image)}
    return {"kind": "text", "text": args.query}


def _search_here(args: argparse.Namespace, query) -> dict:
    """The search in this process (loads the models it needs: seconds), as page_json."""
    from icon_pipeline.apps.common import check_filters, page_json
    from icon_pipeline.model.sentence_encoder import TextEncoderError
    from icon_pipeline.search.index import EmbeddingIndexError
    from icon_pipeline.search.query import QueryError
    from icon_pipeline.search.service import NotReadyError, SearchService

    quiet_model_loading()
    service = SearchService.open()
    try:
        check_filters(args.style, args.category, service.facets)
        page = service.search(
            query,
            service.resolve(args.model),
            k=args.k,
            fold=not args.all_variants,
            styles=tuple(args.style),
            categories=tuple(args.category),
        )
    except (QueryError, NotReadyError, EmbeddingIndexError, TextEncoderError, LookupError) as exc:
        raise CliError(str(exc)) from None
    finally:
        service.close()
    return page_json(page, _described_query(args))


def cmd_search(args: argparse.Namespace) -> int:
    import json

    from icon_pipeline.search.channels import HYBRID, KEYWORDS, channel_info
    from icon_pipeline.search.confidence import NO_MATCH
    from icon_pipeline.search.query import QueryError, check_k, prepare_query_image, validate_text_query

    if bool(args.query) == bool(args.image):
        raise CliError("give a text query or --image PATH (one of them)")
    # Every check on the input before the database is opened or any model is loaded.
    try:
        check_k(args.k)
        query = (
            prepare_query_image(args.image, label=f"--image {args.image}")
            if args.image
            else validate_text_query(args.query)
        )
    except QueryError as exc:
        raise CliError(str(exc)) from None
    api_url = os.environ.get(ENV_API_URL, "").strip()
    page = _search_via_api(args, api_url) if api_url and not args.here else None
    if api_url and not args.here and page is None:
        print(f"no search API answers at {api_url} ({ENV_API_URL}): searching here", file=sys.stderr)
    if page is None:
        page = _search_here(args, query)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    model = page["model"]
    what = f"image {args.image}" if args.image else repr(args.query)
    label = channel_info(model).score_label
    how = f"hybrid search, {label}" if model == HYBRID else f"{model} channel, {label}"
    if not page["results"]:
        why = "no icon's name, tags or captions share a word with" if model == KEYWORDS else "no icon matches"
        print(f"{why} {what} ({how})")
        return 0
    if page["match"] == NO_MATCH:
        print(f"no match: {page['message']}. The closest icons:")
    rated = ", then how likely each is what you mean" if page["results"][0]["confidence"] is not None else ""
    print(f"top {len(page['results'])} for {what} ({how}{rated}):")
    for result in page["results"]:
        folded = ", ".join(v["style"] or v["name"] for v in result["variants"])
        variants = f"  (+ {folded})" if folded else ""
        where = result["file"] or result["icon_id"]
        likely = f" {result['confidence']:6.1%}" if result["confidence"] is not None else ""
        print(f"{result['rank']:3}. {result['score']:6.3f}{likely}  {result['name']:32} {where}{variants}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from icon_pipeline.apps import AppError
    from icon_pipeline.apps.api import serve, usable_cores

    workers = args.workers or usable_cores()
    if workers < 1:
        raise CliError(f"--workers must be 1 or more, got {workers}")
    quiet_model_loading()
    try:
        serve(args.host, args.port, workers=workers)
    except AppError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from icon_pipeline.benchmark.evaluate import evaluate_file, evaluate_judgements, format_table
    from icon_pipeline.search.query import QueryError
    from icon_pipeline.search.service import NotReadyError, SearchService

    if args.queries_file is None and not args.judgements:
        raise CliError("give a queries file, --judgements, or both")
    if args.queries_file is not None and not args.queries_file.is_file():
        raise CliError(f"{args.queries_file}: no such file")
    quiet_model_loading()
    service = SearchService.open()
    results = []
    try:
        if args.queries_file is not None:
            results.append(evaluate_file(args.queries_file, service, k=args.k))
        if args.judgements:
            results.append(evaluate_judgements(service, k=args.k))
    except OSError as exc:
        raise CliError(f"{args.queries_file}: cannot read: {exc.strerror or exc}") from None
    except (QueryError, NotReadyError) as exc:
        raise CliError(str(exc)) from None
    finally:
        service.close()
    if args.json:
        body = [r.to_json() for r in results]
        print(json.dumps(body[0] if len(body) == 1 else body, indent=2))
    else:
        for result in results:
            for problem in result.skipped:
                print(f"{result.file}:{problem.line}: skipped: {problem.reason}", file=sys.stderr)
            print(format_table(result) + "\n")
    return 0 if all(r.scored for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icon-pipeline",
        description="Icon library -> captions, a fine-tuned SigLIP2 encoder and a pgvector search index.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="set up data and the database, then materialize every asset")
    p.add_argument(
        "--run-config",
        type=Path,
        help="Dagster run config YAML for every run of the demo, as for `materialize`, e.g. "
        "`resources: {torchrun: {config: {nproc_per_node: 8}}}` to train on 8 GPUs",
    )
    p.add_argument(
        "--allow-failed-checks", action="store_true", help="exit 0 even when an ERROR-severity check fails"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "ui",
        help="start the database if needed, then the Dagster webserver and daemon (Ctrl-C stops all)",
        description="Serve the Dagster UI over this checkout's code location (icon_pipeline): the asset "
        "graph, the jobs and their runs (the demo's and materialize's runs included, on the Overview "
        "timeline), checks and benchmark metadata. Starts the embedded database if needed, then a code "
        "server, the webserver and the daemon (sensors, schedule); Ctrl-C or SIGTERM stops them all.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=3000, help="port of the webserver (default 3000)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("app", help="serve a Gradio app: captions, dataset, augment or search")
    p.add_argument("name", choices=["captions", "dataset", "augment", "search"])
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, help="default: captions 7861, dataset 7862, augment 7863, search 7864")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("materialize", help="materialize assets (in dependency order) on the instance")
    p.add_argument("assets", nargs="+", help="asset keys, e.g. icon_catalog rendered_icons; '*' for all")
    p.add_argument("--partition", help="one icon_batches partition (default: every registered batch)")
    p.add_argument(
        "--run-config",
        type=Path,
        help="Dagster run config YAML, as in the launchpad, e.g. "
        "`resources: {torchrun: {config: {nproc_per_node: 8}}}` to train on 8 GPUs",
    )
    p.add_argument(
        "--allow-failed-checks", action="store_true", help="exit 0 even when an ERROR-severity check fails"
    )
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("db", help="the embedded PostgreSQL server (or check ICON_PIPELINE_DATABASE_URL)")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser(
        "fetch-data", help="download the default icon set and the open icon sets (npm pack, once)"
    )
    p.set_defaults(func=cmd_fetch_data)

    p = sub.add_parser("lexicon", help="mine search terms from a names file, one JSON object per line")
    p.add_argument("names_file", type=Path, help="one name per line, optional TAB tags")
    p.set_defaults(func=cmd_lexicon)

    p = sub.add_parser("search", help="find icons by text, intent or a screenshot (hybrid search by default)")
    p.add_argument("query", nargs="?", help='a few words or an intent, e.g. "hide layer"')
    p.add_argument("--image", type=Path, help="a screenshot or crop of any size and aspect")
    p.add_argument(
        "--model",
        help="one channel instead of hybrid search (any case): bm25, captions, finetuned, base, pixels "
        "or another model id in the index; an unknown name lists the choices",
    )
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument(
        "--all-variants",
        action="store_true",
        help="every icon on its own line (default: one per concept, variants folded in)",
    )
    p.add_argument(
        "--style",
        action="append",
        default=[],
        help="only icons of this style (repeatable); unknown: the choices",
    )
    p.add_argument(
        "--category",
        action="append",
        default=[],
        help="only icons of this category (repeatable); an unknown one lists the choices",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the results as JSON, in the HTTP API's layout (every channel's score)",
    )
    p.add_argument(
        "--here",
        action="store_true",
        help=f"search in this process even when {ENV_API_URL} names a running `icon-pipeline api` "
        "(which answers in well under a second: its models are loaded)",
    )
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("api", help="serve search as HTTP JSON (GET/POST /api/search); auth as the apps")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=7865, help="default 7865")
    p.add_argument("--workers", type=int, help="server processes (default: one per core)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser(
        "evaluate", help="score your own queries (JSON lines) with the benchmark's metrics, for every channel"
    )
    p.add_argument(
        "queries_file",
        type=Path,
        nargs="?",
        help='one JSON object a line: {"text": "..."} or {"image": "path"}, '
        'plus "relevant": [icon ids or names]',
    )
    p.add_argument(
        "--judgements",
        action="store_true",
        help="also score the queries designers judged in the search app (thumbs up = relevant), "
        "reported separately",
    )
    p.add_argument("-k", type=int, default=30, help="ranking depth (R@1/5/10/30 and mAP@k; default 30)")
    p.add_argument("--json", action="store_true", help="the scores as JSON")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatabaseError, CliError) as exc:  # DatabaseError: also a database lost mid-run
        print(f"icon-pipeline: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
