"""Tables and figures, pure functions of the stored records; case and code analyses."""
