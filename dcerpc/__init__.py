"""dcerpc."""
