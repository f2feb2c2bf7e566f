"""Exception classes. Names kept from the original design note so that alerts and
logs read the same as before; every message names what was wrong and never holds a
secret."""


class AllegroSyncError(Exception):
    """Base for every error raised while syncing stock with Allegro."""


class AllegroRateLimitError(AllegroSyncError):
    """Allegro answered 429 (or the client is blocked) and retries ran out."""


class AllegroTokenError(AllegroSyncError):
    """An account's tokens cannot be used or refreshed."""


class InvalidGrantError(AllegroTokenError):
    """The authorisation server rejected the refresh token or device code for good."""


class InvalidClientError(AllegroTokenError):
    """The authorisation server does not accept the client_id and client secret."""


class AccountNeedsReauthorisationError(AllegroTokenError):
    """The refresh token was rejected (invalid_grant): the seller must authorise again."""

    def __init__(self, account: str, detail: str = ""):
        self.account = account
        super().__init__(
            f"account {account!r} needs re-authorisation ({detail or 'refresh token rejected'}); "
            f"run: stock-pipeline accounts add {account}"
        )


class AccountPausedError(AllegroSyncError):
    """The operator paused the account (`stock-pipeline accounts pause`): no run of it
    reaches Allegro until it is resumed."""

    def __init__(self, account: str):
        self.account = account
        super().__init__(f"account {account!r} is paused; resume it with: stock-pipeline accounts resume {account}")


class AllegroOfferNotFoundError(AllegroSyncError):
    """The offer does not exist (404) or does not belong to this account."""


class AllegroApiError(AllegroSyncError):
    """Allegro answered with an error status that retries will not fix."""

    def __init__(self, method: str, path: str, status: int, detail: str = ""):
        self.method, self.path, self.status, self.detail = method, path, status, detail
        super().__init__(f"{method} {path} -> HTTP {status}: {detail}"[:2000])


class OfferEventsCursorExpiredError(AllegroApiError):
    """Allegro refused the offer-events cursor (`from`): it is older than the journal's
    24 hours or was never issued to this account. The changes after it cannot be read
    any more: every offer must be listed again (a full sync) and the journal followed
    from its current head."""

    def __init__(self, account: str, cursor: str, status: int, detail: str = ""):
        self.method, self.path, self.status, self.detail = "GET", "/sale/offer-events", status, detail
        self.account, self.cursor = account, cursor
        AllegroSyncError.__init__(
            self,
            f"account {account!r}: Allegro no longer knows the offer-events cursor {cursor!r} (unknown, or older "
            f"than its 24-hour journal; HTTP {status}: {detail}"[:1500]
            + "); the changes since it are lost, so a full listing of the offers is needed before following "
            "the journal again from its current head",
        )


class RateLimiterUnavailableError(AllegroSyncError):
    """The shared rate limiter (Redis) cannot be reached; calls are not made without it."""


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


class PipelineDatabaseUnavailableError(AllegroSyncError):
    """The pipeline database (accounts, tokens, audit) cannot be reached."""


class PipelineDatabaseSchemaError(PipelineDatabaseUnavailableError):
    """The pipeline database's schema cannot be used by this release and is not migrated
    automatically: it is newer than the code (a later release migrated it), or it holds
    the pipeline's tables without a migration history that matches a known release."""


class IncompleteOfferMapError(AllegroSyncError):
    """Code that needs every offer of an account (to conclude from an offer's absence)
    was handed an offer map whose listing ended short of Allegro's totalCount."""

    def __init__(self, account: str, listed: int, total_count: int, purpose: str):
        self.account, self.listed, self.total_count, self.purpose = account, listed, total_count, purpose
        super().__init__(
            f"account {account!r}: {purpose} needs a complete offer listing, and this one is partial: "
            f"{listed} offers listed of the {total_count} Allegro reported (totalCount). Nothing that relies on "
            "it was done; the next run lists the offers again"
        )
