"""Everything that exists only to run flashfeed on one machine: dynalite, SeaweedFS, a Spark standalone
cluster, the Airflow launcher and its SQLite fix, hadoop-aws jars. The product never imports it."""
