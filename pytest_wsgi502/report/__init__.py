"""Reports: the terminal table and the JSON manifest."""
