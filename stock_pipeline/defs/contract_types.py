"""The data contracts (core/contracts.py) as Dagster types, checked at every asset boundary.

Each asset declares the type of its output and of its inputs, so Dagster checks the
frame as the step hands it over and again as the next step loads it (the IO manager
could lose a dtype). A frame that breaks its contract fails the step: the type check's
description names the contract, the column, the check and the first failing rows with
their values, and its metadata carries a sample of the failure cases. Each type carries
its columns as a table schema, and each asset as its column schema, for the UI.

The pandera models are turned into types here rather than by dagster-pandera, because
the offer map is not a bare frame (it says whether its listing was complete) and
because dagster-pandera's description of a failure does not name the failing rows.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd
import pandera.pandas as pa
from dagster import (
    DagsterType,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableConstraints,
    TableSchema,
    TypeCheck,
)

from stock_pipeline.core.contracts import (
    ContractError,
    OfferFrame,
    OfferMap,
    PlanFrame,
    RehearsalPlanFrame,
    SnapshotFrame,
    WriteResultFrame,
    check_frame,
    check_offer_map,
)

FAILURE_SAMPLE_ROWS = 20


def table_schema(model: type[pa.DataFrameModel]) -> TableSchema:
    schema = model.to_schema()
    columns = [
        TableColumn(
            name=str(name),
            type=str(column.dtype),
            description=column.description,
            constraints=TableColumnConstraints(
                nullable=column.nullable,
                unique=column.unique,
                other=[check.description or check.error or check.name for check in column.checks],
            ),
        )
        for name, column in schema.columns.items()
    ]
    frame_checks = [check.description or check.name for check in schema.checks]
    if schema.unique:
        frame_checks.append(f"unique together: {', '.join(schema.unique)}")
    return TableSchema(columns=columns, constraints=TableConstraints(other=frame_checks))


def column_schema_metadata(model: type[pa.DataFrameModel]) -> dict:
    """Asset metadata that shows the contract's columns on the asset's page."""
    return {"dagster/column_schema": table_schema(model)}


def _failed(exc: ContractError) -> TypeCheck:
    metadata: dict = {"contract": exc.contract, "problems": len(exc.problems)}
    if not exc.failure_cases.empty:
        metadata["failure_cases"] = len(exc.failure_cases)
        columns = [c for c in ("column", "check", "index", "failure_case") if c in exc.failure_cases.columns]
        sample = exc.failure_cases[columns].head(FAILURE_SAMPLE_ROWS).astype(str)
        metadata["failure_sample"] = MetadataValue.md(sample.to_markdown(index=False))
    return TypeCheck(success=False, description=str(exc), metadata=metadata)


def _contract_type(
    name: str,
    model: type[pa.DataFrameModel],
    description: str,
    typing_type: type,
    check: Callable[[object], object],
    size: Callable[[object], int],
) -> DagsterType:
    def type_check_fn(_context, value) -> TypeCheck:
        try:
            check(value)
        except ContractError as exc:
            return _failed(exc)
        return TypeCheck(success=True, metadata={"rows": size(value)})

    return DagsterType(
        type_check_fn=type_check_fn,
        name=name,
        description=description,
        typing_type=typing_type,
        metadata={"schema": MetadataValue.table_schema(table_schema(model))},
    )


def frame_type(model: type[pa.DataFrameModel], description: str) -> DagsterType:
    return _contract_type(
        model.Config.name, model, description, pd.DataFrame, lambda value: check_frame(model, value), len
    )


SnapshotType = frame_type(
    SnapshotFrame, "The cleaned warehouse snapshot: sku (string, non-empty), stock (int64, >= 0)."
)
PlanType = frame_type(
    PlanFrame,
    "The planned writes: offer_id, sku, before and after (int64, 0..99999), action "
    "(set/end/activate), method (patch/quantity_command/publication_command), batch.",
)
WriteResultsType = frame_type(
    WriteResultFrame, "The planned writes with command_id, status (success/failed/pending/not_sent) and error."
)
RehearsalPlanType = frame_type(RehearsalPlanFrame, "A dry run's plan with would_be_held and held_by.")
OfferMapType = _contract_type(
    "OfferMap",
    OfferFrame,
    "The account's offers (offer_id unique, sku, stock int64, status a publication status) and whether the listing "
    "was complete (as many offers as Allegro's totalCount).",
    OfferMap,
    check_offer_map,
    lambda value: value.listed,
)
