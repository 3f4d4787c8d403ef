"""Pure transforms: DataFrame(s) in, DataFrame out; no I/O, unit-testable on tiny frames."""
