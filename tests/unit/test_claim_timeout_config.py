"""shmlog.claim.timeout.ms is effective: consumers fence a live producer's claim held longer than
it (tests/crash/test_stalled_producer.py shows the effect); here, the key's parsing and docs."""
import pathlib
import re

import pytest

from shmlog import KafkaException
from shmlog._native import ring
from shmlog.config import parse_consumer_config, parse_producer_config

KEY = "shmlog.claim.timeout.ms"
DOCS = pathlib.Path(__file__).parents[2] / "docs"


@pytest.mark.parametrize("parse", [parse_producer_config, parse_consumer_config])
def test_the_claim_timeout_is_accepted_checked_and_not_reported_as_having_no_effect(parse):
    cfg = parse({"bootstrap.servers": "shm:///nowhere", KEY: 500})
    assert cfg.shmlog_claim_timeout_ms == 500 and KEY not in cfg.no_effect
    with pytest.raises(KafkaException, match=re.escape(KEY)):
        parse({"bootstrap.servers": "shm:///nowhere", KEY: 0})


def test_the_broker_side_repairers_use_the_keys_default():
    assert ring.DEFAULT_CLAIM_TIMEOUT_MS == parse_consumer_config({"bootstrap.servers": "shm:///x"}).shmlog_claim_timeout_ms


def test_no_document_still_calls_the_claim_timeout_reserved_or_inert():
    for doc in ("configuration.md", "architecture.md"):
        for line in (DOCS / doc).read_text(encoding="utf-8").splitlines():
            if f"`{KEY}`" in line:
                assert "no effect" not in line.lower() and "reserved" not in line.lower(), line
