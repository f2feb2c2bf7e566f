"""`stock-pipeline`: accounts, sync, history, doctor, db, demo. A public contract: flags and exit
codes stay stable (0 ok, 1 an account failed, 2 bad input or configuration)."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from stock_pipeline import __version__
from stock_pipeline.cli.sync_report import ProgressPrinter, export_plans, print_plans, print_summary
from stock_pipeline.core.vocabulary import WriteStatus
from stock_pipeline.foundation.errors import AllegroSyncError, SettingsError
from stock_pipeline.foundation.logs import configure_logging, redact_settings
from stock_pipeline.foundation.settings import Settings, load_settings
from stock_pipeline.observability import progress

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _print(*args, **kwargs) -> None:
    print(*args, **kwargs, flush=True)


def _check_output_path(path: str | None) -> None:
    if path is None:
        return
    if not path.lower().endswith((".csv", ".json")):
        raise ValueError(f"--output {path}: name a .csv or .json file")
    from pathlib import Path

    if not Path(path).absolute().parent.is_dir():
        raise ValueError(f"--output {path}: the folder does not exist")


def cmd_sync(settings: Settings, args) -> int:
    from stock_pipeline.cli.sync_runner import any_configuration_problem, select_accounts, sync_accounts

    if args.output and not args.dry_run:
        raise ValueError("--output exports the plan of a dry run; add --dry-run")
    _check_output_path(args.output)  # before any call is spent
    accounts = select_accounts(settings, args.account)
    if not accounts:
        from stock_pipeline.cli.accounts_overview import why_nothing_to_sync

        _print(why_nothing_to_sync(settings), file=sys.stderr)
        return EXIT_USAGE
    printer = ProgressPrinter()
    progress.add_listener(printer)
    try:
        _print(
            f"syncing {len(accounts)} account(s)"
            f"{' (dry run: nothing is written or remembered)' if args.dry_run else ''}…",
            file=sys.stderr,
        )
        summaries = sync_accounts(
            settings, accounts, dry_run=args.dry_run, override_guards=args.override_guards, verbose=args.verbose
        )
    finally:
        progress.remove_listener(printer)
    if args.dry_run:
        if args.output:
            _print(f"{export_plans(summaries, args.output)} planned write(s) written to {args.output}", file=sys.stderr)
        print_plans(summaries, exported_to=args.output)
    print_summary(summaries)
    if any_configuration_problem(summaries):
        return EXIT_USAGE
    return EXIT_OK if all(s.success for s in summaries) else EXIT_FAILED


def cmd_accounts_add(settings: Settings, args) -> int:
    from stock_pipeline.allegro.auth import AllegroAuth
    from stock_pipeline.store.accounts import validate_account_name
    from stock_pipeline.store.schema import ACCOUNT_PAUSED

    validate_account_name(args.name)
    store = _account_store(settings)
    store.check_can_store_tokens(args.name)  # refresh tokens are single-use: never spend one we cannot keep
    auth = AllegroAuth(
        settings.allegro_auth_url,
        settings.allegro_client_id,
        settings.allegro_client_secret,
        timeout=settings.allegro_sync_http_timeout,
    )
    if args.refresh_token:
        # "-" reads it from standard input: a token on the command line shows in `ps` and shell history.
        token = sys.stdin.readline().strip() if args.refresh_token == "-" else args.refresh_token
        if not token:
            raise ValueError("no refresh token on standard input")
        pair = auth.refresh(token)
    else:
        device = auth.start_device_flow()
        _print(
            f"Open {device.verification_uri_complete} and confirm the code {device.user_code} "
            f"(valid {device.expires_in // 60} min). Waiting…"
        )
        pair = auth.wait_for_device_token(device)
    store.save_tokens(args.name, pair)
    _print(f"account {args.name} authorised; it becomes a partition within a minute (or at the next `sync`)")
    if store.get(args.name).status == ACCOUNT_PAUSED:
        _print(f"it is still paused; resume it with: stock-pipeline accounts resume {args.name}")
    return EXIT_OK


def cmd_accounts_list(settings: Settings, args) -> int:
    from stock_pipeline.cli.accounts_overview import load_overview, overview_json, overview_table

    rows = load_overview(settings)
    if args.format == "json":
        _print(overview_json(rows), end="")
    elif not rows:
        _print("no accounts; add one with: stock-pipeline accounts add NAME")
    else:
        _print(overview_table(rows))
    return EXIT_OK


def _account_store(settings: Settings):
    from stock_pipeline.store.accounts import AccountStore
    from stock_pipeline.store.engine import engine_for

    return AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())


def cmd_accounts_pause(settings: Settings, args) -> int:
    from stock_pipeline.cli.accounts_overview import paused_message

    _print(paused_message(args.name, _account_store(settings).pause(args.name).status))
    return EXIT_OK


def cmd_accounts_resume(settings: Settings, args) -> int:
    from stock_pipeline.cli.accounts_overview import resumed_message

    _print(resumed_message(args.name, _account_store(settings).resume(args.name)))
    return EXIT_OK


def cmd_accounts_remove(settings: Settings, args) -> int:
    from stock_pipeline.store.account_lock import account_write_lock

    store = _account_store(settings)
    store.require(args.name)
    if not args.yes:
        _print(
            f"Remove account {args.name}? Its tokens, stock policy, ended-offer memory, sale holds and sync status are "
            "deleted; its rows in the writes log (audit) stay. [y/N] ",
            end="",
        )
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            _print(f"account {args.name} not removed (pass --yes to skip this question)", file=sys.stderr)
            return EXIT_USAGE
    with account_write_lock(store.engine, args.name):  # never pull the tokens from under a run that is writing
        removed = store.remove(args.name)
    _print(
        f"account {args.name} removed; {removed.writes_kept} audit row(s) kept in the writes log. "
        "Its partition leaves Dagster at the next partitions sensor tick; authorise it again with "
        f"`stock-pipeline accounts add {args.name}` to bring it back."
    )
    return EXIT_OK


def cmd_accounts_policy(settings: Settings, args) -> int:
    from dataclasses import replace

    from stock_pipeline.store.policies import PolicyStore

    accounts = _account_store(settings)
    if accounts.get(args.name) is None:
        raise ValueError(f"unknown account {args.name!r} (add it with: stock-pipeline accounts add {args.name})")
    store = PolicyStore(accounts.engine)
    changes = {
        k: v
        for k, v in dict(
            reserve_units=args.reserve,
            reserve_percent=args.reserve_percent,
            cap=args.cap,
            combine=args.combine,
            case_insensitive_skus=args.case_insensitive_skus,
        ).items()
        if v is not None
    }
    policy = store.get(args.name)
    if changes:
        policy = replace(policy, **changes)  # validated by StockPolicy
        store.set(args.name, policy)
    for key, value in policy.to_dict().items():
        _print(f"{key:<24} {f'{value:g}%' if key == 'reserve_percent' else value}")
    return EXIT_OK


def cmd_history(settings: Settings, args) -> int:
    from datetime import datetime, timezone

    from stock_pipeline.cli.history_view import parse_since, render_history
    from stock_pipeline.store.engine import engine_for
    from stock_pipeline.store.writes_log import WritesLog

    since = parse_since(args.since, datetime.now(timezone.utc)) if args.since else None
    rows = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(
        sku=args.sku,
        offer_id=args.offer,
        account=args.account,
        status=args.status,
        since=since,
        limit=args.limit,
        # Dagster run ids are 36 characters; anything shorter is the short id a table showed.
        **({"run_id": args.run} if args.run and len(args.run) >= 36 else {"run_id_prefix": args.run}),
    )
    if rows.empty and args.format == "table" and not args.output:
        _print("no writes recorded for that selection")
        return EXIT_OK
    text = render_history(rows, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        _print(f"wrote {len(rows)} write(s) to {args.output}", file=sys.stderr)
    else:
        _print(text, end="")
    if len(rows) == args.limit:
        _print(f"(the newest {args.limit} only; raise --limit for more)", file=sys.stderr)
    return EXIT_OK


def cmd_doctor(settings: Settings, args) -> int:
    from stock_pipeline.cli.doctor import failed, run_checks, summary

    checks = []
    for check in run_checks(settings, send_test=args.send_test):
        _print(check.line())
        checks.append(check)
    _print(summary(checks))
    return EXIT_FAILED if failed(checks) else EXIT_OK


def _database_engine(settings: Settings):
    from stock_pipeline.store.engine import new_engine

    return new_engine(settings.stock_pipeline_database_url)


def cmd_db_upgrade(settings: Settings, args) -> int:
    from stock_pipeline.store.engine import database_errors
    from stock_pipeline.store.migrate import upgrade_to_head

    engine = _database_engine(settings)
    with database_errors(engine):
        result = upgrade_to_head(engine)
    engine.dispose()
    _print(result.sentence())
    return EXIT_OK


def cmd_db_current(settings: Settings, args) -> int:
    from stock_pipeline.store.engine import database_errors
    from stock_pipeline.store.migrate import describe

    engine = _database_engine(settings)
    with database_errors(engine):
        sentence, usable = describe(engine)
    engine.dispose()
    _print(sentence)
    return EXIT_OK if usable else EXIT_FAILED


def cmd_db_stamp(settings: Settings, args) -> int:
    from stock_pipeline.store.engine import database_errors
    from stock_pipeline.store.migrate import stamp

    engine = _database_engine(settings)
    with database_errors(engine):
        state = stamp(engine, args.revision)
    engine.dispose()
    _print(
        f"the pipeline database is recorded at revision {state.revision}; nothing was run"
        + (
            ""
            if state.revision == state.head
            else f"; migrations {', '.join(state.pending())} run at the next start, "
            "or now by: stock-pipeline db upgrade"
        )
    )
    return EXIT_OK


def cmd_metrics_serve(settings: Settings, args) -> int:
    from stock_pipeline.observability.metrics import serve

    if not settings.redis_url:
        _print("error: metrics are kept in Redis; set REDIS_URL", file=sys.stderr)
        return EXIT_USAGE
    server = serve(settings.redis_url, host=args.host, port=args.port)
    _print(f"serving Prometheus metrics at {server.url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
    return EXIT_OK


def cmd_demo(settings: Settings, args) -> int:
    from stock_pipeline.cli.demo import run_demo

    return run_demo(keep_running=args.keep_running)


def percent(raw: str) -> float:
    """`--reserve-percent`: a percentage, "10%" or "10" (both ten percent), 0 to under 100."""
    try:
        value = float(raw.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a percentage such as 10% (or 10), got {raw!r}") from None
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"must be 0% to under 100%, got {raw!r}")
    if 0 < value < 1 and not raw.strip().endswith("%"):
        # Guard settings also accept fractions (0.3 = 30%); here a number is always percent.
        _print(f"note: --reserve-percent {raw} keeps back {value:g}% of the stock, not {value:.0%}", file=sys.stderr)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stock-pipeline", description="Keep Allegro offer stock equal to your warehouse."
    )
    parser.add_argument("--version", action="version", version=f"stock-pipeline {__version__}")
    parser.add_argument("--json-logs", action="store_true", help="log JSON lines (default when not on a terminal)")
    sub = parser.add_subparsers(dest="command", required=True)

    accounts = sub.add_parser("accounts", help="manage seller accounts").add_subparsers(
        dest="accounts_command", required=True
    )
    add = accounts.add_parser("add", help="authorise an account (device flow, or an existing refresh token)")
    add.add_argument("name")
    add.add_argument(
        "--refresh-token",
        metavar="TOKEN",
        help="exchange this refresh token instead of running the device flow ('-': read it from stdin)",
    )
    add.set_defaults(handler=cmd_accounts_add)
    listing = accounts.add_parser("list", help="each account's status, last sync, offers, pending writes, freshness")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.set_defaults(handler=cmd_accounts_list)
    pause = accounts.add_parser("pause", help="stop syncing an account (schedule, sync, launched runs) until resumed")
    pause.add_argument("name")
    pause.set_defaults(handler=cmd_accounts_pause)
    resume = accounts.add_parser("resume", help="sync a paused account again")
    resume.add_argument("name")
    resume.set_defaults(handler=cmd_accounts_resume)
    remove = accounts.add_parser("remove", help="delete an account with its tokens and settings (its audit rows stay)")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    remove.set_defaults(handler=cmd_accounts_remove)
    policy = accounts.add_parser("policy", help="show or change an account's stock policy")
    policy.add_argument("name")
    policy.add_argument("--reserve", type=int, help="units kept back per SKU")
    policy.add_argument(
        "--reserve-percent",
        type=percent,
        metavar="PERCENT",
        help="percent of each SKU's stock kept back, rounded up: 10%% or 10 (0 to under 100)",
    )
    policy.add_argument("--cap", type=int, help="never offer more than this (max 99999)")
    policy.add_argument("--combine", choices=["sum", "max", "min"], help="how several rows of one SKU combine")
    policy.add_argument(
        "--case-insensitive-skus",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        metavar="true|false",
        help="match SKUs regardless of letter case",
    )
    policy.set_defaults(handler=cmd_accounts_policy)

    sync = sub.add_parser("sync", help="sync stock now, through Dagster")
    sync.add_argument("--account", action="append", help="only this account (repeatable); default: all active")
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="rehearse: plan and show the writes and what the guards would say; send, record and remember nothing",
    )
    sync.add_argument(
        "--output",
        metavar="FILE",
        help="with --dry-run: write the full plan to FILE (.csv or .json), not only the first 20 rows",
    )
    sync.add_argument("--verbose", action="store_true", help="show Dagster's own log records on the terminal")
    sync.add_argument(
        "--override-guards",
        action="store_true",
        help="write even if a guard (empty/shrunk snapshot, mass ending) holds the writes; audited",
    )
    sync.set_defaults(handler=cmd_sync)

    history = sub.add_parser("history", help="show recorded writes, newest first")
    history.add_argument("--sku")
    history.add_argument("--offer")
    history.add_argument("--account")
    history.add_argument(
        "--run", metavar="RUN_ID", help="only the writes of this run (its id, or the first characters of it)"
    )
    history.add_argument("--status", choices=[status.value for status in WriteStatus])
    history.add_argument(
        "--since",
        metavar="WHEN",
        help="only writes planned since: a duration back from now (30m, 2h, 3d, 1w) or an ISO "
        "date / date-time, UTC unless it has an offset (2024-05-01, 2024-05-01T10:00)",
    )
    history.add_argument("--format", choices=["table", "json", "csv"], default="table")
    history.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    history.add_argument("--limit", type=int, default=200)
    history.set_defaults(handler=cmd_history)

    doctor = sub.add_parser("doctor", help="check settings, databases, Redis, Allegro credentials, tokens and Telegram")
    doctor.add_argument("--send-test", action="store_true", help="also send a test message to the Telegram chat")
    doctor.set_defaults(handler=cmd_doctor)

    db = sub.add_parser(
        "db", help="the pipeline database's schema (migrations run at every start anyway)"
    ).add_subparsers(dest="db_command", required=True)
    db.add_parser(
        "upgrade", help="bring the pipeline database to this release's schema now (e.g. in a deploy step)"
    ).set_defaults(handler=cmd_db_upgrade)
    db.add_parser(
        "current",
        help="show the pipeline database's schema revision and what an upgrade would do; "
        "exit 1 if this release cannot use it",
    ).set_defaults(handler=cmd_db_current)
    stamp = db.add_parser(
        "stamp",
        help="record the schema revision the database is at, running nothing (repairs; "
        "`db current` says when it is needed)",
    )
    stamp.add_argument("revision")
    stamp.set_defaults(handler=cmd_db_stamp)

    metrics = sub.add_parser("metrics", help="Prometheus metrics").add_subparsers(dest="metrics_command", required=True)
    serve = metrics.add_parser("serve", help="serve the counters kept in Redis as Prometheus text")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9464)
    serve.set_defaults(handler=cmd_metrics_serve)

    demo = sub.add_parser("demo", help="run a full sync against the bundled Allegro simulator")
    demo.add_argument("--keep-running", action="store_true", help="keep the simulator up afterwards (for the UI)")
    demo.set_defaults(handler=cmd_demo)
    return parser


def _glue_option_values(argv: list[str], options: tuple[str, ...] = ("--refresh-token",)) -> list[str]:
    """`--refresh-token -abc…` → `--refresh-token=-abc…`: tokens are URL-safe base64 and
    may start with '-', which argparse would otherwise take for an option."""
    glued: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "-":
            glued.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            glued.append(argv[i])
            i += 1
    return glued


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_glue_option_values(sys.argv[1:] if argv is None else argv))
    # A sync's (or the demo's) terminal shows progress, the summary and one line per problem; its info
    # events still reach the run's event log (and the terminal with --verbose).
    quiet = args.command in ("sync", "demo") and not getattr(args, "verbose", False)
    configure_logging(json=True if args.json_logs else None, terminal_level=logging.WARNING if quiet else logging.INFO)
    try:
        settings = load_settings()  # the one read of the environment; every command works from this object
        redact_settings(settings)
        return args.handler(settings, args)
    except (SettingsError, ValueError) as exc:
        _print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AllegroSyncError as exc:
        _print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
