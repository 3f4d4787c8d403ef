"""Getting a retailer's own data into the lake: `flashfeed import` of CSV files, the UCI sample converter."""
