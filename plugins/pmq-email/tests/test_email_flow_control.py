"""pmq-email's limits, held by pmq's flow control on real servers and a real
SMTP server: a mailbox in warm-up sends that day's volume and no more, and
each recipient domain's rate holds back only that domain's mail.

What the tests read is what arrived at the SMTP server, the jobs' state, and
the attempts workers record in ``job_logs``."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs
import psycopg
from email_testkit import SmtpSink, run_job
from pmq_email import EmailConfig, EmailPlugin
from pmq_email.plugin import DATABASE

from pmq_core import Admin, Rate
from pmq_core.testing import wait_until

WELCOME = {"template": "welcome", "values": {"name": "Ada", "account": "acme"}}
MAILBOX = "new@penguinmails.test"


def sending_states(url: str, account: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM jobs WHERE queue_name = 'email-sending' "
                                 "AND payload->>'account' = %s GROUP BY 1", (account,)).fetchall())


def held(settings) -> int:
    with Admin(settings) as admin:
        return next(q["held"] for q in admin.stats()["queues"] if q["name"] == "email-sending")


def test_a_mailbox_in_warm_up_sends_its_days_volume_and_the_rest_is_held(pmq_runtime, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    rt = pmq_runtime(email_plugin, worker=False, migrator=False)
    # Day 0 of the plan (3 messages), run before the migrator starts: a
    # running migrator reads changed limits within a second, not at once.
    resources = email_plugin.pmq_worker_resources(rt.settings)
    try:
        step = run_job(email_plugin, resources, "warmup:process",
                       {"account": MAILBOX, "start": 3, "target": 50, "growth": 2.0})
    finally:
        resources[DATABASE].close()
    assert (step["volume"], step["complete"]) == (3, False)
    rt.client.enqueue_many("email-sending", [{**WELCOME, "account": MAILBOX, "to": f"user{n}@example.org"}
                                             for n in range(7)])
    others = rt.client.enqueue_many("email-sending", [{**WELCOME, "to": f"old{n}@example.org"} for n in range(2)])
    rt.start_migrator()
    rt.start_worker()
    wait_until(lambda: held(rt.settings), lambda n: n == 4, 15, "four of the mailbox's messages should be held")
    rt.wait_all(others)  # the configured sender's mailbox has no limit: not held behind the new one
    arrived = wait_until(lambda: [m.mail_from for m in sink.messages], lambda m: len(m) >= 5, 15,
                         "three messages from the new mailbox and two from the sender should arrive")
    assert sorted(arrived) == ["hello@penguinmails.test"] * 2 + [MAILBOX] * 3
    assert sending_states(rt.settings.database_url, MAILBOX) == {"completed": 3, "queued": 4}
    with Admin(rt.settings) as admin:
        [limit] = [row for row in admin.limits("email-sending") if row.partition]
    assert (limit.partition, limit.origin, limit.limit.rate) == (f"mailbox:{MAILBOX}", "operator", Rate(3, 86400))
    assert held(rt.settings) == 4 and len(sink.messages) == 5


def delivery_starts(url: str) -> dict[str, list[datetime]]:
    """The start of every recorded email-delivery attempt, by partition."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT j.partition_key, l.started_at FROM job_logs l JOIN jobs j ON j.id = l.job_id "
                            "WHERE j.queue_name = 'email-delivery' ORDER BY l.started_at").fetchall()
    starts: dict[str, list[datetime]] = {}
    for partition, started in rows:
        starts.setdefault(partition, []).append(started)
    return starts


def most_in_window(starts: list[datetime], window: timedelta) -> int:
    """The largest number of ``starts`` (sorted) inside any window of that length."""
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_a_domains_rate_holds_its_deliveries_and_no_other_domains(pmq_runtime, email_config: EmailConfig,
                                                                   smtp_sink: tuple[SmtpSink, int]):
    sink, _ = smtp_sink
    plugin = EmailPlugin(attrs.evolve(email_config, domain_rate=Rate(5, 1)))
    rt = pmq_runtime(plugin, concurrency=10)
    slow = rt.client.enqueue_many("email-sending", [{**WELCOME, "to": f"u{n}@busy.example"} for n in range(20)])
    quick = rt.client.enqueue_many("email-sending", [{**WELCOME, "to": f"u{n}@quiet.example"} for n in range(3)])
    rt.wait_all(slow + quick)
    wait_until(lambda: len(sink.messages), lambda n: n == 23, 20, "every message should arrive")
    starts = delivery_starts(rt.settings.database_url)
    busy, quiet = starts["domain:busy.example"], starts["domain:quiet.example"]
    assert (len(busy), len(quiet)) == (20, 3)
    busiest = most_in_window(busy, timedelta(seconds=1))
    print(f"busy.example: 20 deliveries over {(busy[-1] - busy[0]).total_seconds():.2f}s, "
          f"at most {busiest} in any 1-second window; quiet.example's last started "
          f"{(quiet[-1] - busy[0]).total_seconds():.2f}s after busy.example's first")
    assert busiest <= 5
    # quiet.example's mail, enqueued after busy.example's, started before
    # busy.example's third window: it did not wait behind busy.example's.
    assert quiet[-1] < busy[10]
