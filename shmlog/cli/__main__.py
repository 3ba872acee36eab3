import sys

from shmlog.cli.app import main

sys.exit(main())
