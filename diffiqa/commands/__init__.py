"""One module per ``diffiqa`` subcommand (see diffiqa/cli.py)."""
