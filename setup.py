from setuptools import find_packages, setup

setup(
    name="shmlog",
    version="0.1.0",
    description="A Kafka-semantics message broker for one host over POSIX shared memory",
    packages=find_packages(include=["shmlog", "shmlog.*"]),
    python_requires=">=3.9",
    setup_requires=["cffi>=1.15"],
    cffi_modules=["shmlog/_ffi_build.py:ffibuilder"],
    install_requires=["cffi>=1.15", "numpy>=1.22", "posix-ipc>=1.1", "psutil>=5.9", "click>=8",
                      "cramjam>=2.8", "orjson>=3.8", "fastavro>=1.8", "protobuf>=4.21"],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3", "pytest-timeout>=2", "hypothesis>=6"], "bench": ["pyzmq>=25", "faster-fifo>=1.4", "redis>=4.5", "matplotlib>=3.5", "iceoryx2>=0.10"]},
    entry_points={"console_scripts": ["shmlog=shmlog.cli:main"]},
    package_data={"shmlog": ["py.typed"]},
    zip_safe=False,
)
