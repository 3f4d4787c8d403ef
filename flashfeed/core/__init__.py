"""The product's foundations: config, the lake contract (paths, schemas, partition writer), the sale calendar, experiment variants."""
