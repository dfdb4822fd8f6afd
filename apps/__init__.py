"""dualsci apps: each imports the core (dualsci) and never another app."""
