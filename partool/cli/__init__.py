"""The `partool` command line (Typer). Each subcommand lives in its own module and imports heavy
libraries inside the command, so `partool --help` stays fast."""
