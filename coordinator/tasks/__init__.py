"""Tasks: what an operator submits (``spec``: ``TaskSpec``) and the task lifecycle
(``manager``: ``TaskManager``, ``ACTIONS``), and which coordinator instance runs which task
(``ownership``: ``TaskOwnership``, leases in the store).

May import: the floor, ``store`` and ``privacy`` (a task's DP settings). Coordinator
modules import the modules by path; this facade is for callers outside the coordinator.
"""

from fedrt.coordinator.tasks.manager import ACTIONS, TaskManager
from fedrt.coordinator.tasks.spec import (
    PLAIN_ONLY_STRATEGIES,
    SECAGG_STRATEGIES,
    STRATEGIES,
    TaskSpec,
)

__all__ = [
    "ACTIONS",
    "PLAIN_ONLY_STRATEGIES",
    "SECAGG_STRATEGIES",
    "STRATEGIES",
    "TaskManager",
    "TaskSpec",
]
