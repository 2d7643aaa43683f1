"""One module per resource kind: how its documents are created, changed and removed."""
