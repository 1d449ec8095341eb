"""pmq: background jobs that never get lost.

PostgreSQL holds every job; Redis dispatches them; job types come from
plugins. What a plugin author or an application needs is importable from
here, and nothing here loads a plugin or opens a connection on import.

A plugin in full::

    import attrs
    from pmq_core import JobType, RetryPolicy, hookimpl

    @attrs.frozen
    class Greeting:
        name: str

    def greet(job):
        print(f"hello, {job.payload.name}")

    @hookimpl
    def pmq_register_job_types():
        return [JobType(name="greet", handler=greet, payload=Greeting,
                        retry=RetryPolicy(max_attempts=3))]
"""

from pmq_core.admin import Admin, JobPage
from pmq_core.client import AsyncClient, Client
from pmq_core.config import Settings
from pmq_core.demo import run as run_demo
from pmq_core.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    Fail,
    HandlerCrashed,
    JobCancelled,
    JobNotFoundError,
    PageCursorError,
    PayloadError,
    PluginError,
    PmqError,
    RedisUnavailableError,
    Retry,
    SchemaError,
    UnknownQueueError,
    WorkerLost,
)
from pmq_core.flow import Limit, Limits, Rate
from pmq_core.hookspecs import hookimpl
from pmq_core.jobtypes import JobType, RetryPolicy
from pmq_core.models import Job, JobContext, JobStatus
from pmq_core.payloads import UnreadablePayload
from pmq_core.plugin_settings import load_plugin_settings
from pmq_core.queries import load_queries
from pmq_core.schema import Migration, migrations_in

__all__ = [
    "Admin",
    "AsyncClient",
    "Client",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Fail",
    "HandlerCrashed",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobNotFoundError",
    "JobPage",
    "JobStatus",
    "JobType",
    "Limit",
    "Limits",
    "Migration",
    "PageCursorError",
    "PayloadError",
    "PluginError",
    "PmqError",
    "Rate",
    "RedisUnavailableError",
    "Retry",
    "RetryPolicy",
    "SchemaError",
    "Settings",
    "UnknownQueueError",
    "UnreadablePayload",
    "WorkerLost",
    "hookimpl",
    "load_plugin_settings",
    "load_queries",
    "migrations_in",
    "run_demo",
]
