"""The full-screen guided setup (Textual). Depends on `installer`, never the other way round.

`screens.app.run_guided(answers, options)` is the entry point the CLI calls.
"""
