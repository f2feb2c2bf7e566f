"""Run tags the pipeline reads or sets."""

ACCOUNT_TAG = "stock_pipeline/account"
DRY_RUN_TAG = "stock_pipeline/dry_run"
# Runs the live sensor launched: "changes" (a live run) or "listing" (a full sync building the offer map).
LIVE_TAG = "stock_pipeline/live"
# A deliberate run that passes the guards against a broken feed; recorded on every write.
OVERRIDE_TAG = "stock_pipeline/override_guards"


def guards_overridden(tags) -> bool:
    return str(tags.get(OVERRIDE_TAG, "")).lower() in ("1", "true", "yes")
