"""The store: tables, queries and migrations. Only this package writes SQL."""
