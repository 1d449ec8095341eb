-- Every query pmq-email runs, by name (pmq_email/queries.py loads them).
-- Parameters use psycopg's %(name)s placeholders.

-- name: is_suppressed
SELECT 1 FROM pmq_email_suppressions WHERE address = lower(%(address)s);

-- name: record_delivery
-- email-sending records its rendered message (or that it was suppressed).
-- An existing row is taken over only when version 1 of this plugin left it
-- deferred with no email-delivery job (nothing was sent); otherwise nothing
-- is returned, and the caller reads what the earlier attempt recorded.
INSERT INTO pmq_email_deliveries (job_id, message_id, recipient, template, status, attempt, account, content)
VALUES (%(job_id)s, %(message_id)s, %(recipient)s, %(template)s, %(status)s, %(attempt)s, %(account)s,
        %(content)s)
ON CONFLICT (job_id) DO UPDATE
   SET status = EXCLUDED.status, attempt = EXCLUDED.attempt, account = EXCLUDED.account,
       content = EXCLUDED.content, updated_at = now()
 WHERE pmq_email_deliveries.status = 'deferred' AND pmq_email_deliveries.delivery_job_id IS NULL
RETURNING job_id;

-- name: set_delivery_job
UPDATE pmq_email_deliveries SET delivery_job_id = %(delivery_job_id)s WHERE job_id = %(job_id)s;

-- name: claim_delivery
-- email-delivery records an attempt, as the delivery's own job, when no
-- earlier attempt can have sent it (queued, or deferred by a 4xx reply);
-- otherwise nothing is returned.
UPDATE pmq_email_deliveries
   SET status = %(status)s, attempt = %(attempt)s, updated_at = now()
 WHERE job_id = %(job_id)s AND delivery_job_id = %(delivery_job_id)s AND status IN ('queued', 'deferred')
RETURNING *;

-- name: delivery_by_job
SELECT * FROM pmq_email_deliveries WHERE job_id = %(job_id)s;

-- name: delivery_by_message_id
SELECT * FROM pmq_email_deliveries WHERE message_id = %(message_id)s;

-- name: finish_delivery
UPDATE pmq_email_deliveries
   SET status = %(status)s::text, smtp_reply = %(reply)s, updated_at = now(),
       sent_at = CASE WHEN %(status)s::text = 'sent' THEN now() ELSE sent_at END
 WHERE job_id = %(job_id)s;

-- name: mark_bounced
-- A hard bounce outranks a soft one reported earlier or later.
UPDATE pmq_email_deliveries
   SET status = 'bounced', updated_at = now(), bounced_at = coalesce(bounced_at, now()),
       bounce_kind = CASE WHEN bounce_kind = 'hard' THEN 'hard' ELSE %(kind)s::text END,
       bounce_status = CASE WHEN bounce_kind = 'hard' THEN bounce_status ELSE %(status)s::text END
 WHERE job_id = %(job_id)s;

-- name: suppress_address
INSERT INTO pmq_email_suppressions (address, reason, source)
VALUES (lower(%(address)s), %(reason)s, %(source)s)
ON CONFLICT (address) DO NOTHING;

-- name: insert_inbound
INSERT INTO pmq_email_inbound (storage_key, job_id, message_id, sender, recipients, subject, size_bytes,
                               is_bounce_report)
VALUES (%(storage_key)s, %(job_id)s, %(message_id)s, %(sender)s, %(recipients)s, %(subject)s, %(size_bytes)s,
        %(is_bounce_report)s)
ON CONFLICT (storage_key) DO NOTHING
RETURNING storage_key;

-- name: inbound_by_key
SELECT * FROM pmq_email_inbound WHERE storage_key = %(storage_key)s;

-- name: set_inbound_bounce_job
UPDATE pmq_email_inbound SET bounce_job_id = %(bounce_job_id)s WHERE storage_key = %(storage_key)s;

-- name: insert_bounce
INSERT INTO pmq_email_bounces (storage_key, recipient, kind, status, action, diagnostic, original_message_id,
                               delivery_job_id)
VALUES (%(storage_key)s, lower(%(recipient)s), %(kind)s, %(status)s, %(action)s, %(diagnostic)s,
        %(original_message_id)s, %(delivery_job_id)s)
ON CONFLICT (storage_key, recipient) DO NOTHING;

-- name: insert_warmup_step
INSERT INTO pmq_email_warmup_steps (account, day, volume, target)
VALUES (%(account)s, %(day)s, %(volume)s, %(target)s)
ON CONFLICT (account, day) DO NOTHING
RETURNING day;

-- name: warmup_step
SELECT * FROM pmq_email_warmup_steps WHERE account = %(account)s AND day = %(day)s;

-- name: set_warmup_next
UPDATE pmq_email_warmup_steps SET next_job_id = %(next_job_id)s
 WHERE account = %(account)s AND day = %(day)s;

-- name: warmup_latest_day
SELECT max(day) AS day FROM pmq_email_warmup_steps WHERE account = %(account)s;
