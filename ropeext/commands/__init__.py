"""One module per CLI subcommand; see ropeext.cli for the contract."""
