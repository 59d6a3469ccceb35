"""The command's exit statuses (SPEC), the same whichever front-end runs: 0 all passed, 1 a stage or
check failed, 2 bad usage or invalid answers (nothing changed), 130 interrupted (rerun to resume)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
