"""The worker's parts: every activity with its clients, and the Temporal `Worker` holding them.

`activities(...)` is the one list of what JourneyWorkflow may call; the worker service and
the tests that run the real activities build it here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from enishi.config import WorkerSettings
from enishi.memory.reader import MemoryReader
from enishi.touchpoints import TouchpointPublisher
from workflows import contract
from workflows.activities.audience import AudienceActivities
from workflows.activities.customer_context import CustomerContextActivities
from workflows.activities.definitions import DefinitionActivities
from workflows.activities.enrollment import EnrollmentActivities, HandOverActivities
from workflows.activities.journal import JournalActivities
from workflows.activities.sending import SendActivities
from workflows.audience import AudienceWorkflow
from workflows.journey import JourneyWorkflow
from workflows.runner import WORKFLOW_RUNNER


def activities(
    redis: Redis, producer: AIOKafkaProducer, settings: WorkerSettings
) -> list[Callable[..., Any]]:
    """Every activity JourneyWorkflow and JourneyAudienceWorkflow call, bound to shared clients."""
    definitions = DefinitionActivities(redis)
    context = CustomerContextActivities(MemoryReader(redis))
    enrollment = EnrollmentActivities(redis)
    journal = JournalActivities(TouchpointPublisher(producer))
    sending = SendActivities(redis, producer, definitions.journey, settings)
    audience = AudienceActivities(redis)
    return [
        definitions.load_definition,
        context.customer_context,
        enrollment.set_awaits,
        enrollment.end_enrollment,
        HandOverActivities().hand_over,
        journal.record_journal,
        journal.update_traits,
        sending.send,
        audience.enroll_page,
    ]


def build_worker(
    client: Client,
    bound: Sequence[Callable[..., Any]],
    settings: WorkerSettings,
    *,
    task_queue: str = contract.TASK_QUEUE,
) -> Worker:
    """A Worker for the journey workflows and `bound` activities on `task_queue`."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[JourneyWorkflow, AudienceWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=bound,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_cached_workflows=settings.worker_max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
    )
