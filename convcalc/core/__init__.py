"""Pure: specs, closed-form formulas and result types. Imports no torch, Rich, Typer or YAML."""
