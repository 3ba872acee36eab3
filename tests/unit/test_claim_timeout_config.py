"""shmlog.claim.timeout.ms is reserved: accepted and checked, reported as having no effect.

Claims are repaired when their producer dies, never on a timer (docs/architecture.md), so
the key must say so wherever it is documented, not promise a timeout.
"""
import pathlib
import re

import pytest

from shmlog import KafkaException
from shmlog.config import parse_consumer_config, parse_producer_config

KEY = "shmlog.claim.timeout.ms"
DOCS = pathlib.Path(__file__).parents[2] / "docs"


@pytest.mark.parametrize("parse", [parse_producer_config, parse_consumer_config])
def test_the_claim_timeout_is_accepted_and_reported_as_having_no_effect(parse):
    cfg = parse({"bootstrap.servers": "shm:///nowhere", KEY: 500})
    assert cfg.no_effect == {KEY}
    with pytest.raises(KafkaException, match=re.escape(KEY)):
        parse({"bootstrap.servers": "shm:///nowhere", KEY: 0})


def test_every_place_that_documents_the_claim_timeout_says_it_has_no_effect():
    config_md = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = [line for line in config_md.splitlines() if f"`{KEY}`" in line]
    assert len(rows) == 2 and all("no effect" in row.lower() or "reserved" in row.lower() for row in rows)
    architecture = (DOCS / "architecture.md").read_text(encoding="utf-8")
    (sentence,) = [s for s in architecture.split(". ") if KEY in s]
    assert "no effect" in sentence
