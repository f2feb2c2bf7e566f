"""The pipeline's words, defined once: what a write does, which call carries it, where it
stands, and an offer's publication status on Allegro.

Their values are stored in the audit table (`writes.action`, `writes.method`,
`writes.status`), exported and shown to users, so they never change. Frames hold the
plain string values (`Action.SET.value`); a member compares and hashes equal to its
value, so `frame["action"] == Action.END` and `counts.get(WriteStatus.SUCCESS)` work.
Standard library only: the CLI imports it to offer `history --status` choices.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What a write does to an offer."""

    SET = "set"  # set its quantity
    END = "end"  # end it (stock went to 0)
    ACTIVATE = "activate"  # bring back an offer this pipeline ended


class Method(StrEnum):
    """The call that carries a write."""

    PATCH = "patch"  # PATCH /sale/product-offers/{id}, one offer
    QUANTITY_COMMAND = "quantity_command"  # PUT /sale/offer-quantity-change-commands/{id}
    PUBLICATION_COMMAND = "publication_command"  # PUT /sale/offer-publication-commands/{id} (END, ACTIVATE)


class WriteStatus(StrEnum):
    """Where a write stands in the audit (`writes.status`)."""

    PLANNED = "planned"  # recorded before any call
    SENT = "sent"  # its call is on its way
    SUCCESS = "success"  # Allegro confirmed it
    FAILED = "failed"  # Allegro refused it
    PENDING = "pending"  # Allegro had not finished it when polling stopped; the next run asks again
    NOT_SENT = "not_sent"  # never sent (an activation whose quantity could not be set first)
    HELD = "held"  # not sent: it would have raised the stock of an offer a buyer just bought from (core/sale_holds.py)


class PublicationStatus(StrEnum):
    """An offer's `publication.status` on Allegro; UNKNOWN when the listing gave none."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    ACTIVATING = "ACTIVATING"
    ENDED = "ENDED"
    UNKNOWN = "UNKNOWN"
