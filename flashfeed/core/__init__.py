"""The product's foundations: config, the lake contract (paths, raw schemas, partition writer),
the sale calendar, experiment variants."""
