"""The command line: thin typer commands over ``orchestrator.api``."""
