"""The lab host: a systemd Debian machine in Docker, built and started by the test suite."""
