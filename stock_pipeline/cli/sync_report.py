"""What a sync prints on the terminal: progress lines, the summary table, a dry run's plans."""

from __future__ import annotations

import sys
import threading
import time


def _print(*args, **kwargs) -> None:
    print(*args, **kwargs, flush=True)


class ProgressPrinter:
    """One line per account and stage, at most every `interval` seconds (and the last one)."""

    def __init__(self, stream=sys.stderr, interval: float = 1.0):
        self._stream = stream
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, account: str, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            key = (account, stage)
            if done < total and now - self._last.get(key, 0.0) < self._interval:
                return
            self._last[key] = now
        label = "offers listed" if stage == "listing" else "writes done"
        print(f"  [{account}] {label}: {done}/{total}", file=self._stream, flush=True)


def print_summary(summaries) -> None:
    header = (
        f"{'account':<20} {'result':<13} {'offers':>8} {'changed':>8} {'written':>8} {'failed':>7} "
        f"{'pending':>8} {'api calls':>10} {'seconds':>8}"
    )
    _print(header)
    _print("-" * len(header))
    for s in summaries:
        _print(
            f"{s.account:<20} {s.result:<13} {s.offers:>8} {s.changed:>8} {s.written:>8} "
            f"{s.failed:>7} {s.pending:>8} {s.api_calls:>10} {s.duration_seconds:>8}"
        )
    # One line per problem; the details are in the run's event log (or on the terminal with --verbose).
    for s in summaries:
        if s.error:
            _print(f"\n{s.account}: {s.error}\n  (run {s.run_id})")
        for note in s.notes:
            _print(f"\n{s.account}: note: {note}")


def print_plans(summaries, rows: int = 20, exported_to: str | None = None) -> None:
    """What a dry run would have sent: calls by kind, then the first offers."""
    for s in summaries:
        if s.plan is None:
            continue
        plan = s.plan
        _print(f"\n[{s.account}] planned writes: {len(plan)} offers")
        if plan.empty:
            continue
        commands = plan[plan["batch"] >= 0].groupby(["method", "action"])["batch"].nunique()
        for (method, action), count in commands.items():
            _print(f"  {count} {method.replace('_', ' ')}(s) ({action})")
        _print(f"  {int((plan['method'] == 'patch').sum())} PATCH call(s)")
        _print(plan[["offer_id", "sku", "before", "after", "action", "method"]].head(rows).to_string(index=False))
        if len(plan) > rows:
            more = f"written to {exported_to}" if exported_to else "export them all with --output FILE.csv|FILE.json"
            _print(f"  … and {len(plan) - rows} more ({more})")


def export_plans(summaries, path: str) -> int:
    """Every planned write of a dry run, one row per offer, as CSV or JSON (by the file's extension)."""
    import pandas as pd

    frames = [s.plan.assign(account=s.account) for s in summaries if s.plan is not None]
    columns = ["account", "offer_id", "sku", "before", "after", "action", "method", "batch", "would_be_held", "held_by"]
    plan = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    if path.lower().endswith(".json"):
        plan.to_json(path, orient="records", indent=1, force_ascii=False)
    else:
        plan.to_csv(path, index=False)
    return len(plan)
