"""rds_kernel."""
