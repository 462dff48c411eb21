"""The networks both methods are evaluated on."""
