"""Library of the MNEMOS provisioning project: settings, facts, rendering, operations."""
