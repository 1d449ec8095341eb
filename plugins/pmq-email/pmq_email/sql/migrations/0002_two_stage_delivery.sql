-- pmq-email schema, version 2: sending in two stages, so that pmq's flow
-- control can hold a message back by its sending mailbox (email-sending)
-- and by its recipient's domain (email-delivery).
--
-- email-sending renders the message and stores it here as 'queued', with
-- the email-delivery job it enqueues in the same transaction; that job
-- reads the message from here (its payload holds only ids) and does the
-- SMTP conversation. A row stays keyed by the email-sending job's id, and
-- its Message-ID stays derived from it.

ALTER TABLE pmq_email_deliveries
    ADD COLUMN account         text,   -- the envelope sender (the mailbox)
    ADD COLUMN content         bytea,  -- the rendered message, as sent
    ADD COLUMN delivery_job_id uuid,   -- the email-delivery job that sends it
    DROP CONSTRAINT pmq_email_deliveries_status_check,
    ADD CONSTRAINT pmq_email_deliveries_status_check
        CHECK (status IN ('queued', 'sending', 'sent', 'deferred', 'failed', 'unknown', 'suppressed', 'bounced'));
