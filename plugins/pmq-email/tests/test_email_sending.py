"""email-sending and email-delivery against a real SMTP server: what
arrives, and how often."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import attrs
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from email_testkit import (
    DOMAIN,
    SENDER,
    SmtpSink,
    delivered,
    delivery_row,
    free_port,
    job_type,
    run_delivery,
    run_job,
    with_smtp,
)
from pmq_email import EmailConfig, EmailPlugin, EmailSettings, SmtpServer

from pmq_core import (
    ConfigurationError,
    Fail,
    JobStatus,
    Limit,
    Limits,
    PayloadError,
    Rate,
    Retry,
    load_plugin_settings,
    redaction,
)
from pmq_core.plugin_settings import read

WELCOME = {"to": "ada@example.org", "template": "welcome", "values": {"name": "Ada", "account": "acme"}}


def delivery(settings, job_id):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT status, message_id, smtp_reply FROM pmq_email_deliveries WHERE job_id = %s",
                            (job_id,)).fetchone()


def send_inline(db, plugin, payload=WELCOME, job_id=None):
    """Run an email-sending job inline, then the email-delivery job it
    enqueued: (the sending job's id, what the delivery returned)."""
    job_id = job_id or uuid.uuid4()
    run_job(plugin, db.resources, "email-sending", payload, job_id=job_id)
    return job_id, run_delivery(plugin, db.resources, db.settings, job_id)


def test_sent_message_arrives_rendered_with_its_message_id(pmq_runtime, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    rt = pmq_runtime(email_plugin)
    job_id = rt.enqueue("email-sending", WELCOME)
    assert delivered(rt, job_id).status is JobStatus.COMPLETED
    assert len(sink.messages) == 1
    envelope = sink.messages[0]
    assert envelope.mail_from == "hello@penguinmails.test"
    assert envelope.rcpt_tos == ["ada@example.org"]
    message = message_from_bytes(envelope.original_content, policy=default)
    assert message["From"] == "PenguinMails <hello@penguinmails.test>"
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Welcome, Ada!"
    assert message["Message-ID"] == f"<{job_id}@{DOMAIN}>"
    body = message.get_content()
    assert "Hello Ada," in body and "account acme is ready" in body and "went to ada@example.org" in body
    status, message_id, reply = delivery(rt.settings, job_id)
    assert (status, message_id) == ("sent", f"<{job_id}@{DOMAIN}>") and reply.startswith("250")


def test_running_a_sent_job_again_does_not_send_again(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    job_id = uuid.uuid4()
    queued = run_job(email_plugin, email_db.resources, "email-sending", WELCOME, job_id=job_id)
    first = run_delivery(email_plugin, email_db.resources, email_db.settings, job_id)
    again = run_delivery(email_plugin, email_db.resources, email_db.settings, job_id, attempt=2)
    assert queued["status"] == "queued" and first["status"] == "sent" and not first.get("already")
    assert again == {"status": "sent", "message_id": first["message_id"], "already": True}
    rerun = run_job(email_plugin, email_db.resources, "email-sending", WELCOME, job_id=job_id, attempt=2)
    assert rerun == {"status": "sent", "message_id": first["message_id"],
                     "delivery_job_id": queued["delivery_job_id"], "already": True}
    assert len(sink.messages) == 1
    with psycopg.connect(email_db.settings.database_url) as conn:  # the rerun enqueued no second delivery
        assert conn.execute("SELECT count(*) FROM jobs WHERE queue_name = 'email-delivery'").fetchone()[0] == 1


def test_crash_after_sending_before_recording_does_not_resend(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    job_id, _ = send_inline(email_db, email_plugin)
    # The state a worker dying between the server's 250 and the "sent" write leaves behind.
    with psycopg.connect(email_db.settings.database_url) as conn:
        conn.execute("UPDATE pmq_email_deliveries SET status = 'sending' WHERE job_id = %s", (job_id,))
    with pytest.raises(Fail, match="may have been delivered"):
        run_delivery(email_plugin, email_db.resources, email_db.settings, job_id, attempt=2)
    assert len(sink.messages) == 1
    assert delivery(email_db.settings, job_id)[0] == "unknown"


def test_4xx_reply_is_deferred_then_sent_on_the_next_attempt(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    sink.data_replies = ["451 4.3.0 Mailbox temporarily unavailable"]
    job_id = uuid.uuid4()
    with pytest.raises(Retry, match="451"):
        send_inline(email_db, email_plugin, job_id=job_id)
    assert delivery(email_db.settings, job_id)[0] == "deferred" and sink.messages == []
    again = run_delivery(email_plugin, email_db.resources, email_db.settings, job_id, attempt=2)
    assert again["status"] == "sent"
    assert len(sink.messages) == 1


def test_5xx_reply_fails_at_once(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    sink.rcpt_reply = "550 5.1.1 No such user here"
    job_id = uuid.uuid4()
    with pytest.raises(Fail, match="550"):
        send_inline(email_db, email_plugin, job_id=job_id)
    assert delivery(email_db.settings, job_id)[0] == "failed" and sink.messages == []


def test_unreachable_server_is_retried(email_db, email_config, smtp_sink):
    plugin = EmailPlugin(with_smtp(email_config, port=free_port()))
    with pytest.raises(Retry, match="cannot reach"):
        send_inline(email_db, plugin)


def test_a_worker_gives_the_plugin_its_settings(pmq_runtime, email_config, smtp_sink, monkeypatch, tmp_path):
    """No configuration in code: the worker reads the email section (a file
    and the environment) and hands it to the plugin when it starts."""
    sink, port = smtp_sink
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pmq.toml").write_text(f'[email]\nsmtp_url = "smtp://127.0.0.1:{port}?timeout=5"\n', encoding="utf-8")
    monkeypatch.setenv("PMQ_EMAIL_SENDER", SENDER)
    monkeypatch.setenv("PMQ_EMAIL_TEMPLATES", str(email_config.templates))
    plugin = EmailPlugin()
    rt = pmq_runtime(plugin)  # its worker opens the plugin's database, and closes it when it stops
    job_id = rt.enqueue("email-sending", WELCOME)
    assert delivered(rt, job_id).status is JobStatus.COMPLETED
    assert plugin.config.smtp.port == port and plugin.config.sender == SENDER
    assert [m.mail_from for m in sink.messages] == ["hello@penguinmails.test"]


def test_worker_retries_451_and_gives_up_on_550(pmq_runtime, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    sink.data_replies = ["451 4.7.1 Greylisted, try again later"]
    rt = pmq_runtime(email_plugin)
    retried = rt.enqueue("email-sending", WELCOME)
    done = delivered(rt, retried)
    assert done.status is JobStatus.COMPLETED and done.attempt_count == 2
    assert len(sink.messages) == 1
    sink.rcpt_reply = "550 5.1.1 User unknown"
    refused = rt.enqueue("email-sending", {**WELCOME, "to": "nobody@example.org"})
    failed = delivered(rt, refused)
    assert failed.status is JobStatus.FAILED and failed.attempt_count == 1
    assert "550" in failed.last_error_message


def test_suppressed_recipient_is_skipped(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    with psycopg.connect(email_db.settings.database_url) as conn:
        conn.execute("INSERT INTO pmq_email_suppressions (address, reason) VALUES ('ada@example.org', 'test')")
    result = run_job(email_plugin, email_db.resources, "email-sending", {**WELCOME, "to": "Ada@Example.org"})
    assert result == {"status": "suppressed", "recipient": "Ada@Example.org"}
    assert sink.messages == []


def test_an_address_suppressed_after_queueing_is_not_sent_to(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    job_id = uuid.uuid4()
    run_job(email_plugin, email_db.resources, "email-sending", WELCOME, job_id=job_id)
    with psycopg.connect(email_db.settings.database_url) as conn:  # a hard bounce arrived meanwhile
        conn.execute("INSERT INTO pmq_email_suppressions (address, reason) VALUES ('ada@example.org', 'test')")
    result = run_delivery(email_plugin, email_db.resources, email_db.settings, job_id)
    assert result == {"status": "suppressed", "recipient": "ada@example.org"}
    assert delivery(email_db.settings, job_id)[0] == "suppressed" and sink.messages == []


def test_a_delivery_the_previous_version_left_deferred_is_handed_to_email_delivery(email_db, email_plugin,
                                                                                    smtp_sink):
    sink, _ = smtp_sink
    job_id = uuid.uuid4()
    with psycopg.connect(email_db.settings.database_url) as conn:  # version 1 sent in email-sending, and got a 451
        conn.execute("INSERT INTO pmq_email_deliveries (job_id, message_id, recipient, template, status, attempt) "
                     "VALUES (%s, %s, 'ada@example.org', 'welcome', 'deferred', 1)", (job_id, f"<{job_id}@{DOMAIN}>"))
    queued = run_job(email_plugin, email_db.resources, "email-sending", WELCOME, job_id=job_id, attempt=2)
    assert queued["status"] == "queued" and queued["delivery_job_id"]
    assert run_delivery(email_plugin, email_db.resources, email_db.settings, job_id)["status"] == "sent"
    assert len(sink.messages) == 1


def test_only_the_delivery_job_email_sending_recorded_may_send(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    job_id = uuid.uuid4()
    run_job(email_plugin, email_db.resources, "email-sending", WELCOME, job_id=job_id)
    with pytest.raises(Fail, match="belongs to email-delivery job"):  # a second job, enqueued by hand
        run_job(email_plugin, email_db.resources, "email-delivery", {"sending_job": str(job_id)})
    with pytest.raises(Fail, match="recorded no delivery"):
        run_job(email_plugin, email_db.resources, "email-delivery", {"sending_job": str(uuid.uuid4())})
    assert delivery(email_db.settings, job_id)[0] == "queued" and sink.messages == []
    assert run_delivery(email_plugin, email_db.resources, email_db.settings, job_id)["status"] == "sent"
    with pytest.raises(PayloadError, match="must be a job id"):
        email_db.runtime.enqueue("email-delivery", {"sending_job": "not-a-uuid"})


def test_a_mailbox_sends_as_itself_in_its_partition_and_delivers_in_its_domains(pmq_runtime, email_plugin,
                                                                                 smtp_sink):
    sink, _ = smtp_sink
    rt = pmq_runtime(email_plugin)
    named = rt.enqueue("email-sending", {**WELCOME, "account": "Sales@Acme.example", "to": "bo@Example.NET"})
    unnamed = rt.enqueue("email-sending", WELCOME)
    assert {delivered(rt, job).status for job in (named, unnamed)} == {JobStatus.COMPLETED}
    with psycopg.connect(rt.settings.database_url) as conn:
        partitions = dict(conn.execute("SELECT id, partition_key FROM jobs").fetchall())
    assert partitions[named] == "mailbox:sales@acme.example"
    assert partitions[unnamed] == "mailbox:hello@penguinmails.test"
    assert partitions[delivery_row(rt.settings, named)["delivery_job_id"]] == "domain:example.net"
    assert partitions[delivery_row(rt.settings, unnamed)["delivery_job_id"]] == "domain:example.org"
    by_recipient = {m.rcpt_tos[0]: m for m in sink.messages}
    assert by_recipient["bo@Example.NET"].mail_from == "Sales@Acme.example"
    assert message_from_bytes(by_recipient["bo@Example.NET"].original_content, policy=default)["From"] == \
        "Sales@Acme.example"


def test_missing_template_value_fails_without_sending(email_db, email_plugin, smtp_sink):
    sink, _ = smtp_sink
    with pytest.raises(Fail, match="needs a value for 'account'"):
        run_job(email_plugin, email_db.resources, "email-sending", {**WELCOME, "values": {"name": "Ada"}})
    assert sink.messages == []


def test_bad_payload_is_refused_at_enqueue(email_db):
    with pytest.raises(PayloadError, match="email-sending"):
        email_db.runtime.enqueue("email-sending", {"to": "ada@example.org", "template": "../../etc/passwd"})
    with pytest.raises(PayloadError, match="template must be a template id"):
        email_db.runtime.enqueue("email-sending", {"to": "ada@example.org", "template": "welcome\n"})
    with pytest.raises(PayloadError, match="body"):
        email_db.runtime.enqueue("email-sending", {**WELCOME, "body": "no bodies in payloads"})
    with pytest.raises(PayloadError, match="account must be a bare email address"):
        email_db.runtime.enqueue("email-sending", {**WELCOME, "account": "Sales <sales@acme.example>"})
    with pytest.raises(PayloadError, match="too long to be a partition key"):
        email_db.runtime.enqueue("email-sending", {**WELCOME, "to": f"ada@{'x' * 200}.example"})


class _Accounts:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.seen.append(auth_data.login.decode())
        return AuthResult(success=auth_data.login == b"penguin" and auth_data.password == b"s3cret")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_from_the_url(email_db, email_config):
    sink, accounts = SmtpSink(), _Accounts()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), authenticator=accounts,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    try:
        smtp = SmtpServer.from_url(f"smtp://penguin:s3cret@127.0.0.1:{controller.port}?timeout=5")
        plugin = EmailPlugin(with_smtp(email_config, **{a: getattr(smtp, a) for a in ("port", "username", "password")}))
        assert send_inline(email_db, plugin)[1]["status"] == "sent"
    finally:
        controller.stop()
    assert accounts.seen == ["penguin"] and len(sink.messages) == 1


def test_configuration_from_the_plugin_settings(tmp_path):
    (tmp_path / "pmq.toml").write_text('[email]\nsender = "Team <team@example.net>"\ntemplates = "/srv/templates"\n',
                                       encoding="utf-8")
    environ = {"PMQ_EMAIL_SMTP_URL": "smtp://u%40x:p%3Ass@mail.example.net:2525?starttls=1",
               "PMQ_EMAIL_TEMPLATES": "/srv/mail-templates", "PMQ_EMAIL_DOMAIN_RATE": "600 / minute"}
    config = EmailConfig.from_settings(load_plugin_settings("email", EmailSettings, tmp_path, environ))
    assert (config.smtp.host, config.smtp.port, config.smtp.username, config.smtp.password) == (
        "mail.example.net", 2525, "u@x", "p:ss")
    assert config.smtp.starttls and not config.smtp.implicit_tls
    assert config.templates == Path("/srv/mail-templates") and config.message_domain() == "example.net"
    assert "p:ss" not in repr(config)
    assert config.domain_rate == Rate(600, 60) and EmailConfig().domain_rate == Rate(10, 1)
    delivery_type = job_type(EmailPlugin(config), "email-delivery")
    assert delivery_type.limits == Limits(each_partition=Limit(rate=Rate(600, 60)))
    assert SmtpServer.from_url("smtps://mail.example.net").port == 465
    for bad, problem in [("http://x", "smtp://"), ("smtp://x?tls=1", "unknown option"),
                         ("smtp://x?starttls=maybe", "yes/no"), ("smtp://x:port", "smtp_url")]:
        with pytest.raises(ConfigurationError, match=problem):
            SmtpServer.from_url(bad)


@attrs.frozen
class Other:
    timeout: float = 1.0


def test_a_bad_smtp_url_is_refused_with_the_other_bad_settings_and_its_password_never_shown(tmp_path):
    environ = {"PMQ_EMAIL_SMTP_URL": "smtp://u:pw-71c3a@mail.example.net:2525?tls=1", "PMQ_EMAIL_TEMPLATES": "",
               "PMQ_OTHER_TIMEOUT": "soon"}
    with pytest.raises(ConfigurationError) as caught:
        read({"email": EmailSettings, "other": Other}, tmp_path, environ)
    message = str(caught.value)
    assert "smtp_url: unknown option(s) tls; known: starttls, timeout @ email" in message
    assert "expected a number, got 'soon' @ other.timeout" in message and "pw-71c3a" not in message
    with pytest.raises(ConfigurationError, match=r"rate 'fast' is not N/PERIOD.* @ email"):
        read({"email": EmailSettings}, tmp_path, {"PMQ_EMAIL_DOMAIN_RATE": "fast"})
    assert redaction.scrub("login failed for u:pw-71c3a") == "login failed for u:***"
