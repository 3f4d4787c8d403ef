"""flashfeed Airflow operators, sensors and hooks (thin wrappers around the flashfeed library)."""
