"""`make faults`: the deployed service under faults and load, checked against its database."""
