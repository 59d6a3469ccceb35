"""Shared test set-up. Fixture modules of the real components are plugins listed here."""

pytest_plugins = [
    "tests.lab.fixtures",
    "tests.fixtures.sshd",
    "tests.fixtures.matrix_stack",
    "tests.oci_emulator.fixtures",
    "tests.oci_emulator.harness",
]
