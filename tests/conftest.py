"""Fixtures shared across test packages."""

from collections.abc import Iterator

import pytest


@pytest.fixture
def server_identity() -> Iterator[None]:
    """Flower stamps new messages with the sending task's identity; play the server."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
