"""One module per `nadm` subcommand; `nadm.cli` imports each lazily so `nadm --version` stays fast."""
