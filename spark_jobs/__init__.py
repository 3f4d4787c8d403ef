"""PySpark applications submitted by the DAGs, and the pure transforms they share."""
