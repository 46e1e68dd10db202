"""Monitoring: metrics rows, tracker backends, health checks, the run summary and report.html."""
