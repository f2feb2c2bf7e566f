"""The pipeline's rules as pure functions over pandas frames and plain values: cleaning
the warehouse snapshot, the seller's stock policy, the diff against Allegro, planning
commands and PATCHes, the guards, the data contracts between assets and the shared
vocabulary of actions and statuses. Nothing here does I/O, so all of it is unit-tested
without a database, a network or Dagster; only `foundation/` is imported."""
