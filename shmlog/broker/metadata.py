"""Topic metadata, persisted in the data dir by the supervisor (write, fsync, rename)."""
import json
import os

from shmlog.config import TOPIC_DEFAULTS


def metadata_path(data_dir):
    return os.path.join(data_dir, "meta", "topics.json")


def load(data_dir):
    try:
        with open(metadata_path(data_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"next_topic_id": 1, "topics": {}}


def save(data_dir, meta):
    path = metadata_path(data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def topic_config(topic):
    """The effective config of a topic entry: defaults overlaid with what was set."""
    return {**TOPIC_DEFAULTS, **topic["config"]}
