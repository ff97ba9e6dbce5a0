"""The Typer front end: thin commands over convcalc.library. The only Typer user."""
