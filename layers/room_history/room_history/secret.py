"""A Secrets Manager secret read through Powertools parameters: cached, and re-read early at a bounded rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

SECRET_MAX_AGE_SECONDS = 300  # a changed secret reaches warm functions within five minutes anyway
REFRESH_INTERVAL_SECONDS = 5.0  # at most one early re-read per this many seconds, whatever callers ask


class SecretUnreadable(Exception):
    """Secrets Manager did not give the secret (missing, denied, no region, no network)."""


class CachedSecret:
    """One secret's JSON value. `refresh()` forces a re-read (a rotated credential, a frontend just added),
    but never more often than every REFRESH_INTERVAL_SECONDS, so refused credentials cannot hammer Secrets
    Manager. The last refresh time is a warm-start cache: losing it costs one extra read, nothing else.
    """

    def __init__(
        self,
        arn: str,
        max_age: int = SECRET_MAX_AGE_SECONDS,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.arn = arn
        self.max_age = max_age
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.refreshed_at: float | None = None

    def value(self) -> Any:
        """The secret's JSON value, from Powertools' cache while it is younger than max_age."""
        return self._get(force=False)

    def refresh(self) -> bool:
        """Re-read now unless a re-read happened less than refresh_interval ago; True when it re-read."""
        now = self.clock()
        if self.refreshed_at is not None and now - self.refreshed_at < self.refresh_interval:
            return False
        self.refreshed_at = now
        self._get(force=True)
        return True

    def _get(self, force: bool) -> Any:
        # Imported here: only deployments that use a secret pay for boto3 at cold start.
        from aws_lambda_powertools.utilities import parameters
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return parameters.get_secret(self.arn, transform="json", max_age=self.max_age, force_fetch=force)
        except parameters.exceptions.TransformParameterError as error:
            raise SecretUnreadable(f"does not hold JSON ({error})") from None
        except (parameters.exceptions.GetParameterError, BotoCoreError, ClientError) as error:
            raise SecretUnreadable(f"could not be read ({error})") from None
