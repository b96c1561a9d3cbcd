"""How Temporal runs enishi's workflows: the default sandbox, client libraries passed through.

Workflows import activity modules for their request and result types, and those import
redis, aiokafka and opentelemetry, which workflow code never calls. Passed through, they are
imported once per process instead of again in every run's sandbox (and their lazy imports
no longer trip the sandbox's "imported after initial workflow load" warning).
"""

from __future__ import annotations

from typing import Final

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSED_THROUGH: Final = ("redis", "aiokafka", "opentelemetry")

WORKFLOW_RUNNER: Final = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
)
"""The runner of every Worker and Replayer of JourneyWorkflow / JourneyAudienceWorkflow."""
