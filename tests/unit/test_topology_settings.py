"""The settings that choose a topology (redis_mode, a Sentinel URL,
database_direct_url): accepted as documented, refused in one line naming
the setting, passwords never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmq_core import ConfigurationError, Settings
from pmq_core.config import SentinelAddress, split_hosts
from pmq_core.redaction import redact_url

DATABASE = "postgresql://pmq@db:5432/app"


def load(tmp_path: Path, **environ: str) -> Settings:
    return Settings.load(tmp_path, environ={"PMQ_DATABASE_URL": DATABASE, **environ})


def test_standalone_is_the_default_and_a_cluster_takes_one_or_more_nodes(tmp_path: Path):
    assert load(tmp_path, PMQ_REDIS_URL="redis://r:6379/0").redis_mode == "standalone"
    assert load(tmp_path, PMQ_REDIS_URL="redis://node-1:7000/0", PMQ_REDIS_MODE="cluster").redis_mode == "cluster"
    several = "rediss://:s3cret@node-1:7000,node-2:7001,[::1]:7002/0"
    assert load(tmp_path, PMQ_REDIS_URL=several, PMQ_REDIS_MODE="cluster").redis_url == several
    assert split_hosts(several) == ("rediss://:s3cret@node-1:7000/0", [("node-2", 7001), ("::1", 7002)])
    assert split_hosts("unix:///run/redis.sock?db=1") == ("unix:///run/redis.sock?db=1", [])


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database(tmp_path: Path):
    url = "redis+sentinel://:s3cret@s1:26379,s2:26380,[::1]:26381/pmq-primary/2"
    settings = load(tmp_path, PMQ_REDIS_URL=url, PMQ_REDIS_MODE="sentinel")
    assert "s3cret" not in repr(settings)
    assert SentinelAddress.parse(url) == SentinelAddress(
        [("s1", 26379), ("s2", 26380), ("::1", 26381)], "pmq-primary", 2, None, "s3cret")
    assert SentinelAddress.parse("redis+sentinel://s1:26379/main").db == 0


def test_sentinels_with_a_password_of_their_own_take_it_from_the_query(tmp_path: Path):
    url = "redis+sentinel://:s3cret@s1:26379,s2:26380/main/1?sentinel_username=watch&sentinel_password=w%40tch"
    settings = load(tmp_path, PMQ_REDIS_URL=url, PMQ_REDIS_MODE="sentinel")
    assert "s3cret" not in repr(settings) and "w%40tch" not in repr(settings)
    assert SentinelAddress.parse(url) == SentinelAddress(
        [("s1", 26379), ("s2", 26380)], "main", 1, None, "s3cret", "watch", "w@tch")
    assert redact_url(url).endswith("/main/1?sentinel_username=watch&sentinel_password=***")
    typo = "redis+sentinel://s1:26379/main?sentinel_pasword=Typo-S3cret"  # hidden all the same
    with pytest.raises(ConfigurationError, match="takes only sentinel_username and sentinel_password after '.', "
                                                 "not 'sentinel_pasword'") as refused:
        load(tmp_path, PMQ_REDIS_URL=typo, PMQ_REDIS_MODE="sentinel")
    assert "Typo-S3cret" not in str(refused.value) and "sentinel_pasword=***" in str(refused.value)


@pytest.mark.parametrize(("environ", "message"), [
    ({"PMQ_REDIS_URL": "redis://r/0", "PMQ_REDIS_MODE": "clustered"}, "redis_mode must be one of standalone, cluster"),
    ({"PMQ_REDIS_URL": "redis://r/0", "PMQ_REDIS_MODE": "sentinel"}, "redis_mode sentinel needs a redis.sentinel://"),
    ({"PMQ_REDIS_URL": "redis+sentinel://s:1/m", "PMQ_REDIS_MODE": "cluster"}, "redis_mode cluster needs a redis://"),
    ({"PMQ_REDIS_URL": "redis+sentinel://s:1", "PMQ_REDIS_MODE": "sentinel"}, "the path must name the service"),
    ({"PMQ_REDIS_URL": "redis+sentinel://s/m", "PMQ_REDIS_MODE": "sentinel"}, "each Sentinel must be host:port"),
    ({"PMQ_REDIS_URL": "redis+sentinel://s:1/m/x", "PMQ_REDIS_MODE": "sentinel"}, "must be a number"),
    ({"PMQ_REDIS_URL": "redis://a:1,b:2/0"}, "only redis_mode cluster takes several"),
    ({"PMQ_REDIS_URL": "redis://a:1,b/0", "PMQ_REDIS_MODE": "cluster"}, "each further cluster node must be host:port"),
    ({"PMQ_REDIS_URL": "redis://a:1/2", "PMQ_REDIS_MODE": "cluster"}, "a Redis Cluster has database 0 only"),
])
def test_a_topology_that_does_not_fit_its_url_is_one_line_naming_the_problem(tmp_path: Path, environ, message):
    with pytest.raises(ConfigurationError, match=message) as raised:
        load(tmp_path, **environ)
    assert "\n" not in str(raised.value)


def test_a_cluster_or_sentinel_needs_a_configured_redis(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="redis_mode cluster needs redis_url"):
        Settings.load(tmp_path, environ={"PMQ_REDIS_MODE": "cluster"})


def test_a_direct_url_marks_the_other_as_pooled_and_serves_for_sessions(tmp_path: Path):
    plain = load(tmp_path, PMQ_REDIS_URL="redis://r/0")
    assert (plain.database_pooled, plain.session_database_url) == (False, DATABASE)
    direct = "postgresql://pmq:s3cret@db-direct:5432/app"
    pooled = load(tmp_path, PMQ_REDIS_URL="redis://r/0", PMQ_DATABASE_DIRECT_URL=direct)
    assert (pooled.database_pooled, pooled.session_database_url) == (True, direct)
    assert "s3cret" not in repr(pooled)
    with pytest.raises(ConfigurationError, match="database_direct_url"):
        load(tmp_path, PMQ_REDIS_URL="redis://r/0", PMQ_DATABASE_DIRECT_URL="mysql://db/app")


def test_sentinels_that_name_no_primary_are_one_line_with_each_answer():
    """redis-py's error holds each Sentinel client's long repr; what an
    operator reads is the service and what each Sentinel answered."""
    import redis.sentinel

    from pmq_core.db import reason

    sentinels = redis.sentinel.Sentinel([("127.0.0.1", 1), ("127.0.0.1", 2)], socket_connect_timeout=1)
    with pytest.raises(redis.sentinel.MasterNotFoundError) as raised:
        sentinels.discover_master("pmq")
    text = reason(raised.value, None)
    assert text.startswith("No master found for 'pmq' (ConnectionError: ")
    assert "127.0.0.1:1" in text and "127.0.0.1:2" in text and "<redis." not in text and "\n" not in text
