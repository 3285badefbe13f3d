"""Pure library code: no Dagster imports, so every function here is testable on its own."""
