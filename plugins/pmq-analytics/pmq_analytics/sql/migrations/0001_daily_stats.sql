-- pmq-analytics schema, version 1: one row per day and queue.

CREATE TABLE pmq_analytics_daily (
    day         date         NOT NULL,
    queue_name  varchar(100) NOT NULL,
    jobs        integer      NOT NULL,
    completed   integer      NOT NULL,
    failed      integer      NOT NULL,
    cancelled   integer      NOT NULL,
    unfinished  integer      NOT NULL,
    attempts    integer      NOT NULL,
    timed_attempts integer   NOT NULL,
    p50_seconds double precision,
    p95_seconds double precision,
    computed_at timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (day, queue_name)
);
