"""The ``smart-home`` command: simulate a hub fleet, run the main job end to end, print summaries.

The main job drives the real Dagster machinery (the ``dagster`` CLI in a subprocess against the instance
at $DAGSTER_HOME), never the asset functions directly.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from resources.settings import DATA_DIR_ENV_VAR, dagster_home, data_dir, default_landing_dir, default_warehouse_path
from smart_home_assets.accepted_warnings import python_warnings_option
from smart_home_assets.lib.tables import INGEST_AND_FEATURES_SELECTION, PREDICTION_FEEDBACK, USAGE_MODEL

DEFINITIONS_MODULE = "smart_home_assets.definitions"


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"--fault-rate must be in [0, 1), got {text}")
    return value


def run_simulate(args: argparse.Namespace) -> int:
    from smart_home_tools.simulate import RegimeChange, simulate_fleet

    landing = Path(args.landing).resolve() if args.landing else default_landing_dir()
    try:
        regime = RegimeChange.parse(args.regime_change) if args.regime_change else None
    except ValueError as exc:
        print(f"smart-home simulate: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    summary = simulate_fleet(
        landing,
        hubs=args.hubs,
        days=args.days,
        start=args.start,
        fault_rate=args.fault_rate,
        seed=args.seed,
        events_per_hub=args.events_per_hub,
        progress=not args.quiet,
        regime=regime,
    )
    elapsed = time.perf_counter() - started
    print(
        f"wrote {summary.files} files, {summary.lines:,} lines ({summary.bytes:,} bytes) to {landing} "
        f"in {elapsed:.1f}s ({summary.lines / max(elapsed, 1e-9):,.0f} lines/s)"
    )
    if summary.faults:
        print("injected faults: " + ", ".join(f"{k}={v}" for k, v in sorted(summary.faults.items())))
    if summary.truncated_files:
        shown = ", ".join(summary.truncated_files[:3]) + (", ..." if len(summary.truncated_files) > 3 else "")
        print(f"truncated gzip files: {len(summary.truncated_files)} ({shown})")
    return 0


def dagster_env() -> dict[str, str]:
    """The environment for dagster subprocesses: the project's instance and data dir unless already set."""
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(dagster_home()))
    env.setdefault(DATA_DIR_ENV_VAR, str(data_dir()))
    env["PYTHONWARNINGS"] = python_warnings_option(os.environ.get("PYTHONWARNINGS", ""))
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    instance_config = Path(env["DAGSTER_HOME"]) / "dagster.yaml"
    if not instance_config.exists():
        shutil.copy(Path(__file__).resolve().parents[1] / "dagster_home" / "dagster.yaml", instance_config)
    return env


def dagster_bin() -> str:
    """The ``dagster`` executable of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("dagster")
    return str(candidate) if candidate.exists() else "dagster"


def materialize_range(selection: str, first: dt.date, last: dt.date, env: dict[str, str]) -> None:
    """A CLI backfill: one run over ``first...last`` (every selected asset has a single-run backfill policy)."""
    command = [
        dagster_bin(),
        "asset",
        "materialize",
        "-m",
        DEFINITIONS_MODULE,
        "--select",
        selection,
        "--partition-range",
        f"{first.isoformat()}...{last.isoformat()}",
    ]
    _run_logged(command, env, f"materialize-{selection.split(',')[-1]}-{first}-{last}")


def _run_logged(command: list[str], env: dict[str, str], name: str, allow_failed_checks: bool = False) -> bool:
    """Run a dagster CLI command with its log in <data>/logs, showing the run's progress meanwhile
    (smart_home_tools/progress.py); False when only a blocking check failed (and ``allow_failed_checks``), an
    exit with the first errors otherwise."""
    from smart_home_tools.progress import follow_run

    recover(env)
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    log = Path(env[DATA_DIR_ENV_VAR]) / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # The run's output goes to its log file; what the user sees meanwhile is read from the run's event log
    # (smart_home_tools/progress.py): a status line on a terminal, a line per finished step otherwise.
    command_started = time.time()
    with log.open("w") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)
    with process:
        try:
            follow_run(process, env["DAGSTER_HOME"], command_started, command, sys.stdout)
        except BaseException:
            process.kill()  # as subprocess.run did (Ctrl-C included)
            raise
    returncode = process.returncode
    output = log.read_text(errors="replace")
    if returncode != 0 and allow_failed_checks and only_checks_failed(command_started):
        print(f"  a blocking check failed (see the summary); log: {log}")
        return False
    if returncode != 0:
        failures = [line for line in output.splitlines() if "STEP_FAILURE" in line or "Error" in line][:10]
        raise SystemExit(
            f"dagster asset materialize failed (exit {returncode}); full log: {log}\n" + "\n".join(failures)
        )
    print(f"  run succeeded in {time.perf_counter() - started:.0f}s; log: {log}")
    return True


def recover(env: dict[str, str]) -> list[str]:
    """Free what runs killed earlier still hold (see smart_home_assets.recovery), and say so."""
    import socket

    import dagster as dg

    from smart_home_assets.recovery import recover_dead_runs

    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
    try:
        with dg.DagsterInstance.get() as instance:
            # this machine's runs only: a shared instance (PostgreSQL) holds other hosts' live runs, whose
            # process ids mean nothing here
            recovered = recover_dead_runs(instance, host=socket.gethostname())
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous
    for run_id in recovered:
        print(f"  recovered run {run_id[:8]}: its process had died; marked failed, its pool slot freed")
    return recovered


def run_recover(args: argparse.Namespace) -> int:
    recovered = recover(dagster_env())
    print(f"{len(recovered)} dead run(s) recovered")
    return 0


def only_checks_failed(created_after: float) -> bool:
    """True when the runs created after ``created_after`` failed only in asset check steps: at least one step
    failed, yet every asset a run planned was materialized (read from the instance's event log, like the report)."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(
            dg.RunsFilter(created_after=dt.datetime.fromtimestamp(created_after, dt.UTC))
        )
        failures = 0
        for record in records:
            run_id = record.dagster_run.run_id
            planned = {
                e.get_dagster_event().asset_key
                for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
            }
            materialized = {
                e.get_dagster_event().asset_key
                for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
            }
            failures += len(instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE))
            if not planned <= materialized:
                return False
        return failures > 0


def latest_materialization_time(asset: str) -> float:
    """Timestamp of the asset's latest materialization in the instance (0 when never materialized)."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return event.timestamp if event else 0.0


def runs_since(started: float) -> list[tuple[str, str, str]]:
    """(run id, what it materialized, what launched it) for runs created after ``started``."""
    import dagster as dg

    rows = []
    with dg.DagsterInstance.get() as instance:
        for record in reversed(instance.get_run_records(limit=50)):
            if record.create_timestamp.timestamp() < started:
                continue
            run = record.dagster_run
            assets = ",".join(sorted(k.to_user_string() for k in run.asset_selection or []))
            trigger = run.tags.get("dagster/sensor_name") or run.tags.get("smart_home/trigger") or "manual"
            partition = run.tags.get("dagster/partition", "")
            rows.append((run.run_id[:8], f"{assets} {partition}".strip(), f"{trigger} [{run.status.value}]"))
    return rows


def unfinished_runs() -> int:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        return len(
            instance.get_run_ids(
                dg.RunsFilter(
                    statuses=[
                        dg.DagsterRunStatus.QUEUED,
                        dg.DagsterRunStatus.NOT_STARTED,
                        dg.DagsterRunStatus.STARTING,
                        dg.DagsterRunStatus.STARTED,
                    ]
                )
            )
        )


def run_daemon_until(asset: str, after: float, env: dict[str, str], timeout_s: float) -> bool:
    """Run the real Dagster daemon (sensors, automation, run queue) until ``asset`` rematerializes."""
    import signal

    log_path = Path(env[DATA_DIR_ENV_VAR]) / "logs" / "dagster-daemon.log"
    command = [
        str(Path(sys.executable).with_name("dagster-daemon")),
        "run",
        "-w",
        str(Path(__file__).resolve().parents[1] / "workspace.yaml"),
    ]
    print("$ " + " ".join(command) + f"   (log: {log_path})", flush=True)
    bin_dir = str(Path(sys.executable).parent)
    daemon_env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", "")}
    with log_path.open("w") as log:
        daemon = subprocess.Popen(
            command,
            env=daemon_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                print(f"  the daemon exited with {daemon.returncode}; see {log_path}")
                return False
            if latest_materialization_time(asset) > after:
                # Let the runs it set off (predictions, feedback) finish before the daemon is stopped.
                settle_until = time.monotonic() + 240
                while unfinished_runs() and time.monotonic() < settle_until:
                    time.sleep(5)
                return True
            time.sleep(5)
        print(f"  {asset} did not rematerialize within {timeout_s:.0f}s; see {log_path}")
        return False
    finally:
        # dagster-daemon ignores a polite stop for a long time (see STACK-NOTES): end its whole group.
        try:
            os.killpg(daemon.pid, signal.SIGTERM)
            daemon.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()


def run_pipeline(
    first: dt.date, last: dt.date, env: dict[str, str], step: int = 1, steps: int = 4, model_config: str | None = None
) -> tuple[bool, bool]:
    """Backfill first..last through Dagster's CLI, train, predict, score and summarize.

    Returns (every partition conserved, a champion beats the baselines).
    """
    from smart_home_tools.report import print_model_summary, print_summary

    days = (last - first).days + 1
    print(f"\n[{step}/{steps}] ingest, clean and build features for {days} partitions: one CLI backfill run")
    materialize_range(INGEST_AND_FEATURES_SELECTION, first, last, env)

    print(f"\n[{step + 1}/{steps}] train, evaluate and promote: usage_model (with its check)")
    extra = ["--config-json", model_config] if model_config else []
    checked = _run_logged(
        [dagster_bin(), "asset", "materialize", "-m", DEFINITIONS_MODULE, "--select", USAGE_MODEL, *extra],
        env,
        "materialize-usage_model",
        allow_failed_checks=True,
    )

    from smart_home_assets.lib.training import HOLDOUT_DAYS

    holdout_first = max(first, last - dt.timedelta(days=HOLDOUT_DAYS))
    print(
        f"\n[{step + 2}/{steps}] predict with the champion for {holdout_first}..{last}, and score the predictions"
        " whose actuals have landed"
    )
    if not checked:
        print(
            "  skipped: the champion failed its blocking check (it is not the version usage_model decided on, or"
            " it does not beat the naive baselines), and the check blocks predictions"
        )
    else:
        # online_predictions: the prediction service's answers of those days (none before `smart-home serve` ran)
        materialize_range("usage_predictions,online_predictions", holdout_first, last, env)
        materialize_range(PREDICTION_FEEDBACK, holdout_first, last - dt.timedelta(days=1), env)

    print(f"\n[{step + 3}/{steps}] summary")
    conserved = print_summary(default_warehouse_path())
    champion_ok = print_model_summary(default_warehouse_path())
    return conserved, champion_ok


def run_pipeline_command(args: argparse.Namespace) -> int:
    env = dagster_env()
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", DATA_DIR_ENV_VAR)})
    print(f"data directory: {data_dir()}\nDAGSTER_HOME:   {env['DAGSTER_HOME']}")
    conserved, _ = run_pipeline(args.first, args.last, env, model_config=args.model_config)
    # Whether a model beats the baselines is a finding on the user's data (printed above), not a failure.
    return 0 if conserved else 1


def run_demo(args: argparse.Namespace) -> int:
    from smart_home_tools.report import print_model_summary

    env = dagster_env()
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", DATA_DIR_ENV_VAR)})
    # --end chooses the simulated window (any season); the daemon step lands the day after it.
    last = args.end or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    today = last + dt.timedelta(days=1)
    first = last - dt.timedelta(days=args.days - 1)
    print(f"data directory: {data_dir()}\nDAGSTER_HOME:   {env['DAGSTER_HOME']}")

    print(f"\n[1/6] simulating {args.hubs} hubs x {args.days} days ({first}..{last}), fault rate {args.fault_rate}")
    simulate = argparse.Namespace(
        landing=None,
        hubs=args.hubs,
        days=args.days,
        start=first,
        fault_rate=args.fault_rate,
        seed=args.seed,
        events_per_hub=args.events_per_hub,
        quiet=True,
        regime_change=None,
    )
    run_simulate(simulate)

    conserved, champion_ok = run_pipeline(first, last, env, step=2, steps=6)
    retrained = True
    if not args.skip_daemon:
        print(
            f"\n[6/6] landing the next day ({today}) and letting the daemon's sensor and automation retrain"
            " the model, with no manual action"
        )
        before = latest_materialization_time(USAGE_MODEL)
        started = time.time()
        run_simulate(argparse.Namespace(**{**vars(simulate), "days": 1, "start": today}))
        # On a second run the same day, the simulator finds identical files and keeps them: re-upload them
        # (a hub may re-upload a day), so the sensor sees changed files either way.
        now = time.time()
        for upload in (default_landing_dir() / today.isoformat()).iterdir():
            if not upload.name.startswith("."):
                os.utime(upload, (now, now))
        from smart_home_assets import alerts

        alert_log = None
        if not env.get(alerts.WEBHOOK_URL_VAR):  # the demo's receiver: a local log, printed below
            alert_log = data_dir() / "alerts.jsonl"
            env[alerts.WEBHOOK_URL_VAR] = alert_log.as_uri()
        sent_before = alert_log.stat().st_size if alert_log and alert_log.exists() else 0
        retrained = run_daemon_until(USAGE_MODEL, before, env, timeout_s=args.daemon_timeout)
        print("  runs launched by the daemon:")
        for run_id, what, trigger in runs_since(started):
            print(f"    {run_id}  {what:<60}  {trigger}")
        if alert_log is not None:
            print_alert_log(alert_log, sent_before)
        if retrained:
            print("  usage_model rematerialized by automation")
            print_model_summary(default_warehouse_path())
    if not champion_ok:
        # A finding about the data, as in `smart-home pipeline`: the promotion gate did its job, and the best
        # naive baseline serves as champion so predictions still exist.
        print("\nfinding: no trained model beats the naive baselines on this window; the best baseline serves")
    return 0 if conserved and retrained else 1


def print_alert_log(path: Path, offset: int) -> None:
    """The alerts the daemon's alerts_sensor sent to the demo's local receiver during this run."""
    import json

    from smart_home_assets import alerts

    lines = []
    if path.exists():
        with path.open("rb") as log_file:
            log_file.seek(offset)
            lines = [json.loads(line) for line in log_file.read().splitlines() if line.strip()]
    print(f"  alerts the daemon would have sent (${alerts.WEBHOOK_URL_VAR} unset: written to {path}):")
    for body in lines:
        print(f"    {body['event']:<8}  {body['kind']:<26}  {body['summary']}")
    if not lines:
        print("    none: no run or blocking check failed, no day missed its deadline, the model is not decaying")


def run_summary(args: argparse.Namespace) -> int:
    from smart_home_tools.report import print_summary

    os.environ.update({k: v for k, v in dagster_env().items() if k in ("DAGSTER_HOME", DATA_DIR_ENV_VAR)})
    return 0 if print_summary(default_warehouse_path()) else 1


def run_import_csv(args: argparse.Namespace) -> int:
    """Events CSV -> contract upload files in the landing folder; exit 2 with the reasons when it cannot."""
    from smart_home_tools.history_import import HistoryImportError, import_csv

    landing = Path(args.landing).resolve() if args.landing else default_landing_dir()
    columns = {
        "event_id": args.event_id_column,
        "hub_id": args.hub_column,
        "user_id": args.user_column,
        "device_id": args.device_column,
        "device_type": args.type_column,
        "event_timestamp": args.timestamp_column,
        "duration_s": args.duration_column,
        "energy_wh": args.energy_column,
    }
    hub_timezones: dict[str, str] = {}
    for text in args.hub_timezone:
        hub, sep, tz = (part.strip() for part in text.partition("="))
        problem = (
            "wants HUB=TZ (e.g. tracebase-sydney=Australia/Sydney)"
            if not (sep and hub and tz)
            else "gives the hub two time zones"
            if hub_timezones.setdefault(hub, tz) != tz
            else None
        )
        if problem:
            print(f"smart-home import-csv: error: --hub-timezone {text!r} {problem}", file=sys.stderr)
            return 2
    started = time.perf_counter()
    try:
        summary = import_csv(
            args.path,
            landing,
            timezone=args.timezone,
            hub_timezones=hub_timezones,
            columns=columns,
            overwrite=args.overwrite,
        )
    except HistoryImportError as exc:
        print(f"smart-home import-csv: error: {exc}", file=sys.stderr)
        return 2
    print(summary.report())
    print(f"  took {time.perf_counter() - started:.2f}s")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from smart_home_tools.service.app import serve

    serve(args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smart-home", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="write simulated hub uploads into a landing folder")
    sim.add_argument("--hubs", type=int, default=100)
    sim.add_argument("--days", type=int, default=7)
    sim.add_argument("--start", type=_date, default=dt.date.today() - dt.timedelta(days=7), help="YYYY-MM-DD")
    sim.add_argument("--fault-rate", type=_fraction, default=0.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--events-per-hub", type=int, default=1000, help="mean events per hub per day")
    sim.add_argument("--landing", help="landing folder (default: $SMART_HOME_LANDING_DIR or <data>/landing)")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument(
        "--regime-change",
        metavar="DAY:TYPE:FACTOR",
        help="from DAY on, every TYPE device uses FACTOR times its energy (e.g. 2026-03-20:heating:2)",
    )
    sim.set_defaults(func=run_simulate)

    demo = sub.add_parser("demo", help="the main job: simulate, ingest through Dagster, print a summary")
    demo.add_argument("--hubs", type=int, default=200)
    demo.add_argument("--days", type=int, default=60)
    demo.add_argument(
        "--end", type=_date, default=None, help="last simulated day, YYYY-MM-DD (default: yesterday, UTC); any season"
    )
    demo.add_argument("--fault-rate", type=_fraction, default=0.02)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--events-per-hub", type=int, default=150)
    demo.add_argument("--skip-daemon", action="store_true", help="stop after the summary (no daemon step)")
    demo.add_argument("--daemon-timeout", type=float, default=600, help="seconds to wait for the retrain")
    demo.set_defaults(func=run_demo)

    pipeline = sub.add_parser("pipeline", help="backfill a date range through Dagster, train, predict, summarize")
    pipeline.add_argument("--from", dest="first", type=_date, required=True, help="first partition, YYYY-MM-DD")
    pipeline.add_argument("--to", dest="last", type=_date, required=True, help="last partition, YYYY-MM-DD")
    pipeline.add_argument("--model-config", help="run config JSON for usage_model (dagster --config-json)")
    pipeline.set_defaults(func=run_pipeline_command)

    serve = sub.add_parser(
        "serve",
        help="the prediction service: POST /predict, /predict/batch, GET /health, /docs",
        description="HTTP predictions from the MLflow champion (followed without a restart); "
        "every answer is stored in $SMART_HOME_ONLINE_STORE before it is sent.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(func=run_serve)

    rec = sub.add_parser("recover", help="after a crash with no daemon: fail dead runs and free their pool slots")
    rec.set_defaults(func=run_recover)

    summary = sub.add_parser("summary", help="print rows, quarantine reasons and check results")
    summary.set_defaults(func=run_summary)

    imp = sub.add_parser(
        "import-csv",
        help="turn an events CSV (a historical export) into upload files in landing",
        description="Write an events CSV as contract upload files <landing>/<YYYY-MM-DD>/<hub_id>"
        ".jsonl.gz (UTC days), so history flows through landing -> raw_usage -> device_usage. "
        "Local timestamps without an offset: a time in the spring-forward gap is shifted forward "
        "by the gap, an ambiguous one takes the earlier (DST) instant.",
    )
    imp.add_argument("path", help="the CSV file (header line required; extra columns are ignored)")
    imp.add_argument("--timezone", required=True, help="IANA time zone of timestamps without an offset")
    imp.add_argument(
        "--hub-timezone",
        action="append",
        default=[],
        metavar="HUB=TZ",
        help="time zone of one hub's timestamps, overriding --timezone (repeatable)",
    )
    imp.add_argument("--landing", help="landing folder (default: $SMART_HOME_LANDING_DIR or <data>/landing)")
    imp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing upload files whose content differs (default: refuse, write nothing)",
    )
    imp.add_argument("--event-id-column", help="column of event ids (default: none, ids derived from the row)")
    imp.add_argument("--hub-column", default="hub_id")
    imp.add_argument("--user-column", help="column of user ids (default: none, a placeholder user id)")
    imp.add_argument("--device-column", default="device_id")
    imp.add_argument("--type-column", default="device_type")
    imp.add_argument("--timestamp-column", default="event_timestamp")
    imp.add_argument("--duration-column", default="duration_s")
    imp.add_argument("--energy-column", default="energy_wh")
    imp.set_defaults(func=run_import_csv)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
