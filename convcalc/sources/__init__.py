"""Where networks come from: stack files and the inline grammar, built-in architectures,
presets, batch readers. The only users of yaml and tomllib."""
