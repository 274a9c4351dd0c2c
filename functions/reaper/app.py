"""Scheduled reaper: removes rooms idle longer than MAX_IDLE_SECONDS."""

from __future__ import annotations

import os
from functools import cache

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from room_history.history import RoomHistory
from room_history.settings import Settings

# Stop starting new batches when less than this is left of the function's timeout.
SAFETY_MARGIN_MS = 5_000

logger = Logger()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "RoomHistory")
settings = Settings.from_env(os.environ)


@cache
def room_history() -> RoomHistory:
    """One Redis client per container, reused by warm invocations."""
    return RoomHistory.open(settings)


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    reaped = room_history().reap_idle_rooms(lambda: context.get_remaining_time_in_millis() > SAFETY_MARGIN_MS)
    metrics.add_metric(name="RoomsReaped", unit=MetricUnit.Count, value=reaped)
    logger.info("idle rooms reaped", reaped=reaped, max_idle_seconds=settings.max_idle_seconds)
    return {"reaped": reaped}
