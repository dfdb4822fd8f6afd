"""dualsci."""
