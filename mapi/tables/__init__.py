"""Tables: hierarchy and contents tables, restrictions and sort orders."""
