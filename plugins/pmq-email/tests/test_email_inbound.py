"""email-processing and bounce:process on real sample messages."""

from __future__ import annotations

import shutil
import uuid

import psycopg
import pytest
from email_testkit import DATA, DOMAIN, run_job
from pmq_email.bounces import parse_report
from pmq_email.inbound import read_message

from pmq_core import Fail, JobStatus

SAMPLE_ID = b"<5b0e6a52-2f3c-4c57-9d3c-0d1f3f0c7a11@penguinmails.test>"


def store(config, key, sample):
    """Put a sample message where the inbound storage keeps it."""
    target = config.inbound_dir / key
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / sample, target)
    return key


def rows(settings, sql, *params):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_inbound_message_is_recorded(email_db, email_plugin, email_config):
    key = store(email_config, "2026/11/16/reply.eml", "inbound_reply.eml")
    result = run_job(email_plugin, email_db.resources, "email-processing", {"key": key})
    assert result["bounce_job_id"] is None and not result["is_bounce_report"]
    (row,) = rows(email_db.settings, "SELECT message_id, sender, recipients, subject, size_bytes, is_bounce_report "
                                     "FROM pmq_email_inbound WHERE storage_key = %s", key)
    assert row == ("<CAF7x9q1-reply-2026@mail.customer.example>", "grace@customer.example",
                   ["support@penguinmails.test", "ops@customer.example", "lead@customer.example"],
                   "Re: Your warm-up plan is ready", (DATA / "inbound_reply.eml").stat().st_size, False)
    assert run_job(email_plugin, email_db.resources, "email-processing", {"key": key})["already"] is True


@pytest.mark.parametrize("key", ["../outside.eml", "/etc/passwd", "a/../../outside.eml", ".", "link/outside.eml"])
def test_keys_that_leave_the_inbound_directory_are_refused(email_config, key):
    (email_config.inbound_dir.parent / "outside.eml").write_bytes(b"Subject: private\n\nnot yours\n")
    (email_config.inbound_dir / "link").symlink_to(email_config.inbound_dir.parent)
    with pytest.raises(Fail, match="outside the inbound directory"):
        read_message(email_config, key)


def test_missing_message_fails_clearly(email_config):
    with pytest.raises(Fail, match="no inbound message is stored under 'nope.eml'"):
        read_message(email_config, "nope.eml")


def test_hard_bounce_suppresses_and_marks_the_delivery(email_db, email_plugin, email_config):
    delivery = uuid.UUID("5b0e6a52-2f3c-4c57-9d3c-0d1f3f0c7a11")
    with psycopg.connect(email_db.settings.database_url) as conn:
        conn.execute("INSERT INTO pmq_email_deliveries (job_id, message_id, recipient, template, status, attempt) "
                     "VALUES (%s, %s, 'gone@customer.example', 'welcome', 'sent', 1)",
                     (delivery, SAMPLE_ID.decode()))
    key = store(email_config, "dsn/hard.eml", "dsn_hard.eml")
    result = run_job(email_plugin, email_db.resources, "bounce:process", {"key": key})
    assert result["hard"] == ["gone@customer.example"] and result["soft"] == []
    assert result["delivery_job_id"] == str(delivery)
    assert rows(email_db.settings, "SELECT address, reason FROM pmq_email_suppressions") == [
        ("gone@customer.example", "hard bounce 5.1.1")]
    assert rows(email_db.settings, "SELECT status, bounce_kind, bounce_status FROM pmq_email_deliveries") == [
        ("bounced", "hard", "5.1.1")]
    assert rows(email_db.settings, "SELECT recipient, kind, action, status, delivery_job_id FROM pmq_email_bounces"
                ) == [("gone@customer.example", "hard", "failed", "5.1.1", delivery)]
    run_job(email_plugin, email_db.resources, "bounce:process", {"key": key})
    assert rows(email_db.settings, "SELECT count(*) FROM pmq_email_bounces") == [(1,)]


def test_soft_bounce_marks_the_delivery_without_suppressing(email_db, email_plugin, email_config):
    with psycopg.connect(email_db.settings.database_url) as conn:
        conn.execute("INSERT INTO pmq_email_deliveries (job_id, message_id, recipient, template, status, attempt) "
                     "VALUES (gen_random_uuid(), '<9c4d1e77-0a43-4b8e-8f61-2d4b7e3a5c20@penguinmails.test>', "
                     "'full@customer.example', 'digest', 'sent', 1)")
    key = store(email_config, "dsn/soft.eml", "dsn_soft.eml")
    result = run_job(email_plugin, email_db.resources, "bounce:process", {"key": key})
    assert result["soft"] == ["full@customer.example"] and result["hard"] == []
    assert rows(email_db.settings, "SELECT count(*) FROM pmq_email_suppressions") == [(0,)]
    assert rows(email_db.settings, "SELECT status, bounce_kind, bounce_status FROM pmq_email_deliveries") == [
        ("bounced", "soft", "4.2.2")]


def test_a_plain_message_is_not_a_bounce_report(email_config):
    key = store(email_config, "reply.eml", "inbound_reply.eml")
    with pytest.raises(Fail, match="not a delivery status notification"):
        parse_report(read_message(email_config, key)[1])


def test_bounce_report_arriving_by_mail_suppresses_the_recipient(pmq_runtime, email_plugin, email_config, smtp_sink):
    sink, _ = smtp_sink
    rt = pmq_runtime(email_plugin)
    welcome = {"to": "gone@customer.example", "template": "welcome", "values": {"name": "Alan", "account": "x"}}
    sent = rt.enqueue("email-sending", welcome)
    assert rt.wait(sent).status is JobStatus.COMPLETED
    message_id = f"<{sent}@{DOMAIN}>".encode()
    # The receiving server rejects it later and returns a report quoting the real Message-ID.
    report = (DATA / "dsn_hard.eml").read_bytes().replace(SAMPLE_ID, message_id)
    (email_config.inbound_dir / "dsn-1.eml").write_bytes(report)
    processed = rt.enqueue("email-processing", {"key": "dsn-1.eml"})
    assert rt.wait(processed).status is JobStatus.COMPLETED
    ((bounce_job,),) = rows(rt.settings, "SELECT bounce_job_id FROM pmq_email_inbound WHERE storage_key = 'dsn-1.eml'")
    bounce = rt.wait(bounce_job)
    assert bounce.queue_name == "bounce:process" and bounce.status is JobStatus.COMPLETED
    assert bounce.payload == {"key": "dsn-1.eml"}
    assert rows(rt.settings, "SELECT address FROM pmq_email_suppressions") == [("gone@customer.example",)]
    assert rows(rt.settings, "SELECT status, bounce_kind FROM pmq_email_deliveries WHERE job_id = %s", sent) == [
        ("bounced", "hard")]
    again = rt.enqueue("email-sending", welcome)
    assert rt.wait(again).status is JobStatus.COMPLETED
    assert rows(rt.settings, "SELECT status FROM pmq_email_deliveries WHERE job_id = %s", again) == [("suppressed",)]
    assert len(sink.messages) == 1
