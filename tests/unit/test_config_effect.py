"""Every broker and topic key is effective, refused, or documented as having no effect: the
keys marked no-effect in shmlog/config.py are exactly the ones docs/configuration.md lists
under "no effect", and none of them is described as working in the main tables."""
import pathlib
import re

from shmlog.config import BROKER_KEYS, TOPIC_KEYS, parse_broker_config

DOCS = (pathlib.Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")


def section(title):
    """The text of a docs section, up to the next heading of the same or a higher level."""
    level = title.split(" ")[0]
    start = DOCS.index(title + "\n")
    rest = DOCS[start + len(title) + 1:]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


def table_keys(text):
    """First-column keys of the markdown table rows in text."""
    return {m.group(1) for m in re.finditer(r"^\| `([^`]+)`", text, re.M)}


def backticked(text):
    return set(re.findall(r"`([^`]+)`", text))


def test_inert_topic_keys_are_listed_as_such_and_only_there():
    inert = {k.name for k in TOPIC_KEYS if k.no_effect}
    main = table_keys(section("## Topic configs").split("### Topic keys with no effect")[0])
    listed = table_keys(section("### Topic keys with no effect"))
    assert inert == listed
    assert not inert & main
    assert {k.name for k in TOPIC_KEYS} == inert | main


def test_inert_broker_keys_are_listed_as_such_and_only_there():
    inert = {k.name for k in BROKER_KEYS if k.no_effect}
    main = table_keys(section("## Broker configs").split("### Broker keys with no effect")[0])
    listed = backticked(section("### Broker keys with no effect").split("### What every broker")[0])
    assert inert <= listed
    assert not inert & main
    assert {k.name for k in BROKER_KEYS} - inert <= main


def test_an_inert_broker_key_is_reported_as_having_no_effect():
    cfg = parse_broker_config({"num.replica.fetchers": 2, "replica.lag.time.max.ms": 3,
                               "log.cleaner.enable": False, "delete.topic.enable": False})
    assert cfg.no_effect == {"num.replica.fetchers"}
