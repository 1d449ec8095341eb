-- pmq-email schema, version 1: the plugin's own tables. It never alters the
-- core's tables.

-- One row per email-sending job, keyed by the job id, so that a job that
-- runs again knows what its earlier attempts did.
CREATE TABLE pmq_email_deliveries (
    job_id        uuid        PRIMARY KEY,
    message_id    text        NOT NULL UNIQUE,
    recipient     text        NOT NULL,
    template      text        NOT NULL,
    status        varchar(20) NOT NULL
        CHECK (status IN ('sending', 'sent', 'deferred', 'failed', 'unknown', 'suppressed', 'bounced')),
    attempt       integer     NOT NULL,
    smtp_reply    text,
    bounce_kind   varchar(4)  CHECK (bounce_kind IN ('hard', 'soft')),
    bounce_status varchar(16),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    bounced_at    timestamptz
);

CREATE INDEX pmq_email_deliveries_recipient_idx ON pmq_email_deliveries (recipient);

-- Addresses never to send to again (lower-cased).
CREATE TABLE pmq_email_suppressions (
    address    text        PRIMARY KEY,
    reason     text        NOT NULL,
    source     text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per inbound message, keyed by its storage key.
CREATE TABLE pmq_email_inbound (
    storage_key      text        PRIMARY KEY,
    job_id           uuid        NOT NULL,
    message_id       text,
    sender           text,
    recipients       text[]      NOT NULL,
    subject          text,
    size_bytes       integer     NOT NULL,
    is_bounce_report boolean     NOT NULL,
    bounce_job_id    uuid,
    received_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per recipient reported in a delivery status notification.
CREATE TABLE pmq_email_bounces (
    storage_key         text        NOT NULL,
    recipient           text        NOT NULL,
    kind                varchar(4)  NOT NULL CHECK (kind IN ('hard', 'soft')),
    status              varchar(16) NOT NULL,
    action              varchar(16) NOT NULL,
    diagnostic          text,
    original_message_id text,
    delivery_job_id     uuid,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (storage_key, recipient)
);

-- One row per warm-up step run, keyed by account and day of the plan.
CREATE TABLE pmq_email_warmup_steps (
    account     text        NOT NULL,
    day         integer     NOT NULL CHECK (day >= 0),
    volume      integer     NOT NULL CHECK (volume >= 1),
    target      integer     NOT NULL,
    next_job_id uuid,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, day)
);
