import sys

from shmlog.broker.kafka_listener.server import main

main(sys.argv)
